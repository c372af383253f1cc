"""pairs: the sequence-to-sequence task's data (the CMU Pronouncing Dictionary, or a folder of pair files)
-> data/seq2seq/{train,valid,test}.tsv, source_vocab/, target_vocab/; counts and OOV rates -> metrics/pairs.json
(pairs_validate checks them; a source symbol unseen in train is read as <unk>)."""

from seqlab import paths, stage
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.io import atomic_path, write_json
from seqlab.pairs import SPLITS, load_cmudict, load_pair_files, references, write_pairs
from seqlab.vocab import PAIR_SPECIALS, build_vocab, save_vocab

OUT, METRICS = paths.PAIRS, "metrics/pairs.json"


@exit_on_error
def main() -> None:
    params = stage.params()
    cfg = params.pairs
    with stage.tracked("pairs", params, "pairs", outs=(OUT, METRICS)) as run:
        if cfg.source == "cmudict":
            data = load_cmudict(cfg.valid_fraction, cfg.test_fraction, cfg.seed, cfg.stress == "keep")
        else:
            data = load_pair_files(cfg.path, cfg.source_chars)
        for split in SPLITS:
            for pair in data.splits[split]:
                longest = max(len(pair.source), len(pair.target))
                if longest > cfg.max_length:
                    side = "source" if len(pair.source) >= len(pair.target) else "target"
                    raise SeqLabError(f"{pair.origin}: the {side} has {longest} tokens, more than params.yaml: pairs.max_length ({cfg.max_length})")
        train = data.splits["train"]
        vocabs = {side: build_vocab([getattr(p, side) for p in train], cfg.min_freq, specials=PAIR_SPECIALS)
                  for side in ("source", "target")}
        metrics = {"source_vocab_size": len(vocabs["source"]), "target_vocab_size": len(vocabs["target"])}
        for split in SPLITS:
            pairs = data.splits[split]
            metrics[f"{split}_pairs"] = len(pairs)
            metrics[f"{split}_sources"] = len(references(pairs))
            metrics[f"{split}_target_tokens"] = sum(len(p.target) for p in pairs)
            if split != "train":
                for side in ("source", "target"):
                    oov, total = vocabs[side].oov(getattr(p, side) for p in pairs)
                    metrics[f"{split}_{side}_oov_rate"] = round(oov / total, 6) if total else 0.0
        with atomic_path(OUT) as tmp:
            tmp.mkdir()
            for split in SPLITS:
                write_pairs(data.splits[split], tmp / f"{split}.tsv")
            for side, vocab in vocabs.items():
                save_vocab(vocab, tmp / f"{side}_vocab", specials=PAIR_SPECIALS, min_freq=cfg.min_freq)
        write_json(METRICS, metrics)
        run.log_metrics(metrics)
        run.log_artifact(METRICS)
        run.tag_data_hashes("outs", [OUT, METRICS])
        print(f"pairs: {metrics['train_sources']:,} / {metrics['valid_sources']:,} / {metrics['test_sources']:,} train/valid/test sources "
              f"({metrics['train_pairs']:,} / {metrics['valid_pairs']:,} / {metrics['test_pairs']:,} pairs); "
              f"{metrics['source_vocab_size']} source and {metrics['target_vocab_size']} target symbols")


if __name__ == "__main__":
    main()
