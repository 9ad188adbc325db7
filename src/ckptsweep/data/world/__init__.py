"""The embedded default: a synthetic world generated deterministically from a seed.

Follows the measured recipe (``notes/world-recipe.md``, run r3). A fixed pool of people,
cities and attribute values, each of which becomes a single BPE token; every document and
task example draws fresh attributes for its people, so every task is a reading task and
nothing can be memorised. The exception, on purpose, are a few *persistent* people whose
attributes never change: they are stated in several documents and surface forms, so
closed-book recall and fact tracing have a ground truth (``world.json`` maps each of their
facts to the documents stating it).

``build_world(cfg, out_dir)`` writes::

    out_dir/corpus.jsonl                 {"id": "doc-000123", "kind": "bio", "text": ...,
                                          "facts": [...]}
    out_dir/tokenizer_lines.txt          tokenizer-only training lines (markers, label words)
    out_dir/raw/{dataset}/{split}.jsonl  task data in the real hub datasets' schemas
    out_dir/world.json                   config, sizes, pools, persistent facts, collisions

What the corpus holds and never holds is the point of the design: the benchmark formats
("{facts} Question: ... Answer: ...") are in it, so the base model can learn them during
pre-training; the "###" markers, the NLI and paraphrase formats and label words, negated
sentences, the summary sentence style and the answer -> question direction never are, so
only fine-tuning teaches them.

Every test example is checked against all train splits and the corpus: if its input (or
its passage, as a sentence sequence) occurs there, it is regenerated and counted in
``world.json["rejected_collisions"]``.

Modules, each importing only those above it:

- `config`: `WorldConfig`, the size knobs. Standard library only, so that the parse-time
  study layer can import it cheaply.
- `vocab`: the world's words and sentence templates (attributes, surface forms, questions,
  value lists, name syllables, label words), `fact` and `fact_id`.
- `pools`: the entity pools one seed yields and the sentence helpers every generator uses.
- `corpus`: the pre-training documents.
- `tasks`: one example maker per raw dataset and `dataset_specs`, the list of datasets.
- `build`: clean separation (`TextIndex`), the tokenizer's training lines and
  `build_world`, which writes everything.

This ``__init__`` imports nothing, so importing `ckptsweep.data.world.config` does not pull
in the adapters or the tokenizer library: import each name from its module.
"""
