"""The revision resolver: branch lists shaped like the real ones -> steps pinned to commits."""

from __future__ import annotations

import pytest

from ckptsweep.checkpoints.hub import resolve_hub
from ckptsweep.checkpoints.manifest import read_manifest, write_manifest
from ckptsweep.checkpoints.revisions import RevisionError, nearest, parse_branches, resolve


def sha(name: str) -> str:
    return f"{abs(hash(name)) % 16**40:040x}"


def refs(*names: str) -> list[dict]:
    """A branch list in the shape of ``list_repo_refs(repo).branches``."""
    return [{"name": n, "ref": f"refs/heads/{n}", "target_commit": sha(n)} for n in names]


# allenai/OLMo-1B-hf: floor token counts, gaps (no 342000, 424000, 505000, 592000), a
# final step past the round thousand, main. Names as published by users of the repo.
OLMO_1B_HF = refs(
    "main", "step1000-tokens4B", "step2000-tokens8B", "step3000-tokens12B",
    "step5000-tokens20B", "step10000-tokens41B", "step18000-tokens75B", "step20000-tokens83B",
    "step117850-tokens494B", "step330000-tokens1383B", "step343000-tokens1438B",
    "step369000-tokens1547B", "step425000-tokens1781B", "step509000-tokens2134B",
    "step593000-tokens2486B", "step640000-tokens2683B", "step738000-tokens3094B",
    "step738020-tokens3094B")
# allenai/OLMo-1B (original): rounded token counts, other steps.
OLMO_1B = refs(
    "main", "step20000-tokens84B", "step330000-tokens1384B", "step342000-tokens1434B",
    "step424000-tokens1778B", "step505000-tokens2118B", "step592000-tokens2483B",
    "step738000-tokens3095B", "step738020-tokens3095B")
PYTHIA = refs("main", "step0", "step1", "step512", "step1000", "step2000", "step143000")
OLMO2 = refs("main", "stage1-step10000-tokens21B", "stage1-step20000-tokens42B",
              "stage2-ingredient1-step10000-tokens21B", "stage2-ingredient2-step10000-tokens21B")
DATADECIDE = refs("main", "step0-seed-default", "step1250-seed-default",
                  "step1250-seed-large-aux-2", "step2500-seed-default")


def test_steps_are_found_by_parsing_names_not_by_computing_them():
    got = resolve({"allenai/OLMo-1B-hf": OLMO_1B_HF}, [1000, 343000, 738000],
                  "allenai/OLMo-1B-hf")
    assert [r.branch for r in got] == ["step1000-tokens4B", "step343000-tokens1438B",
                                       "step738000-tokens3094B"]
    assert [r.commit for r in got] == [sha(r.branch) for r in got]
    assert got[0].tokens == 4 * 10**9 and got[2].tokens == 3094 * 10**9
    # The same step in the original repo has another name: still found.
    orig = resolve({"allenai/OLMo-1B": OLMO_1B}, [738000], "allenai/OLMo-1B")
    assert orig[0].branch == "step738000-tokens3095B" and orig[0].commit != got[2].commit


def test_a_missing_step_fails_naming_the_nearest_branches():
    with pytest.raises(RevisionError) as err:
        resolve({"allenai/OLMo-1B-hf": OLMO_1B_HF}, [342000], "allenai/OLMo-1B-hf")
    msg = str(err.value)
    assert "no checkpoint branch for step 342000" in msg
    assert "step343000-tokens1438B (step 343000)" in msg
    assert "step330000-tokens1383B (step 330000)" in msg
    assert "never computed" in msg
    # Paper steps that the original repo has but -hf lacks, and vice versa.
    for step in (424000, 505000, 592000):
        with pytest.raises(RevisionError, match=f"step {step}; nearest"):
            resolve({"r": OLMO_1B_HF}, [step], "r")
    with pytest.raises(RevisionError, match="nearest: step20000-tokens84B"):
        resolve({"r": OLMO_1B}, [1000], "r")


def test_nearest_prefers_the_closest_on_both_sides():
    assert nearest([1000, 2000, 5000, 10000], 4000) == [5000, 2000]
    assert nearest([1000, 2000], 99) == [1000, 2000]
    assert nearest([], 5) == []


def test_main_and_explicit_refs_pin_the_final_checkpoint():
    got = resolve({"r": OLMO_1B_HF}, [738000, 738020], "r", refs={738020: "main"})
    assert got[1].branch == "main" and got[1].commit == sha("main")
    assert got[1].tokens == 3094 * 10**9  # from the same-step branch
    with pytest.raises(RevisionError, match="has no branch 'nope'"):
        resolve({"r": OLMO_1B_HF}, [1000], "r", refs={"1000": "nope"})


def test_other_families_with_their_own_names():
    assert resolve({"p": PYTHIA}, [1000, 143000], "p")[1].branch == "step143000"
    assert resolve({"p": PYTHIA}, [1000], "p")[0].tokens is None
    # OLMo-2: stage-2 ingredients reuse step numbers; the default pattern keeps stage 1.
    with pytest.raises(RevisionError, match="both match step 10000"):
        parse_branches(OLMO2, r"^(?:stage\d+-)?(?:ingredient\d+-)?.*step(?P<step>\d+)")
    got = resolve({"o": OLMO2}, [10000], "o")
    assert got[0].branch == "stage1-step10000-tokens21B" and got[0].tokens == 21 * 10**9
    dd = resolve({"d": DATADECIDE}, [1250], "d", pattern=r"^step(?P<step>\d+)-seed-default$")
    assert dd[0].branch == "step1250-seed-default"


def test_one_repo_per_checkpoint():
    repos = {480000: "TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1T",
             1431000: "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"}
    lists = {repo: refs("main") + [{"name": "v1", "target_commit": "f" * 40}]
             for repo in repos.values()}
    got = resolve(lists, [480000, 1431000], repos=repos, refs={1431000: "v1"})
    assert [(r.repo, r.branch) for r in got] == [(repos[480000], "main"),
                                                 (repos[1431000], "v1")]
    assert got[0].commit == sha("main") and got[1].commit == "f" * 40
    with pytest.raises(RevisionError, match="no repo"):
        resolve(lists, [5], repos=repos)


def test_resolve_hub_writes_a_pinned_manifest(tmp_path):
    spec = {"source": "hub", "repo": "allenai/OLMo-1B-hf", "steps": [1000, 738020],
            "refs": {"738020": "main"}, "trust_remote_code": False}
    calls = []

    def list_refs(repo):
        calls.append(repo)
        return OLMO_1B_HF

    rows = resolve_hub(spec, list_refs=list_refs, log=lambda m: None)
    assert calls == ["allenai/OLMo-1B-hf"]
    write_manifest(tmp_path / "m.tsv", rows)
    table = read_manifest(tmp_path / "m.tsv")
    assert table["1000"].revision == sha("step1000-tokens4B")
    assert table["738020"].ref == "main" and table["738020"].source == "allenai/OLMo-1B-hf"
    assert table["1000"].trust_remote_code is False
    # A family whose names carry no token count: tokens_per_step, else 0.
    pythia = resolve_hub({"repo": "p", "steps": [1000], "tokens_per_step": 2097152},
                         list_refs=lambda r: PYTHIA, log=lambda m: None)
    assert pythia[0].tokens == 1000 * 2097152
    missing = {"repo": "p", "steps": [1500]}
    with pytest.raises(RevisionError, match="nearest: step1000 .*step2000"):
        resolve_hub(missing, list_refs=lambda r: PYTHIA, log=lambda m: None)
