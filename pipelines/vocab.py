"""vocab: data/tokens/train.txt -> data/vocab/{vocab.tsv,vocab.json}; size and OOV rates -> metrics/vocab.json."""

from seqlab import paths, stage
from seqlab.errors import exit_on_error
from seqlab.io import write_json
from seqlab.tokenize import read_stream
from seqlab.vocab import build_vocab, save_vocab

IN, OUT, METRICS = paths.TOKENS, paths.VOCAB, "metrics/vocab.json"


@exit_on_error
def main() -> None:
    params = stage.params()
    cfg = params.vocab
    with stage.tracked("vocab", params, "vocab", outs=(OUT, METRICS)) as run:
        train = read_stream(f"{IN}/train.txt")
        vocab = build_vocab(train, cfg.min_freq, cfg.max_size)
        metrics = {"vocab_size": len(vocab), "train_tokens": sum(map(len, train))}
        for split in ("valid", "test"):
            oov, total = vocab.oov(read_stream(f"{IN}/{split}.txt"))
            metrics[f"{split}_tokens"] = total
            metrics[f"{split}_oov_tokens"] = oov
            metrics[f"{split}_oov_rate"] = round(oov / total, 6) if total else 0.0
        save_vocab(vocab, OUT, min_freq=cfg.min_freq, max_size=cfg.max_size)
        write_json(METRICS, metrics)
        run.log_metrics(metrics)
        run.log_artifact(f"{OUT}/vocab.json")
        run.log_artifact(METRICS)
        run.set_tag("seqlab.vocab_sha256", vocab.sha256)
        run.tag_data_hashes("deps", [IN])
        run.tag_data_hashes("outs", [OUT, METRICS])
        print(f"vocab: {len(vocab)} types, OOV valid {metrics['valid_oov_rate']:.2%} test {metrics['test_oov_rate']:.2%}")


if __name__ == "__main__":
    main()
