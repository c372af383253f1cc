"""tokenize: data/prepared -> data/tokens/{split}.txt (token streams), {split}.stats.parquet, tokenizer.json."""

from tqdm import tqdm

from seqlab import paths, stage
from seqlab.corpus import SPLITS
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.io import atomic_path, read_lines
from seqlab.tokenize import fit_tokenizer, format_stream, line_stats, save_tokenizer, tokenize_lines

IN, OUT = paths.PREPARED, paths.TOKENS


@exit_on_error
def main() -> None:
    params = stage.params()
    cfg = params.tokenize
    with stage.tracked("tokenize", params, "tokenize", outs=(OUT,)) as run:
        lines = {split: read_lines(f"{IN}/{split}.txt") for split in SPLITS}
        tokenizer = fit_tokenizer(
            cfg.kind, lines["train"], lowercase=cfg.lowercase, pattern=cfg.pattern, bpe_vocab_size=cfg.bpe_vocab_size
        )
        with atomic_path(OUT) as tmp:
            tmp.mkdir()
            for split in tqdm(SPLITS, desc="tokenize", unit="split"):
                tokens = tokenize_lines(tokenizer, lines[split])
                try:
                    stream = format_stream(tokens)
                except SeqLabError as err:
                    raise SeqLabError(f"{IN}/{split}.txt: {err} (params.yaml: tokenize.pattern)") from None
                (tmp / f"{split}.txt").write_text(stream, encoding="utf-8")
                stats = line_stats(lines[split], tokens)
                stats.to_parquet(tmp / f"{split}.stats.parquet", index=False)
                run.log_dataset(stats, f"{split}.stats", f"{OUT}/{split}.stats.parquet", split)
                run.log_metrics({f"{split}_tokens": int(stats.n_tokens.sum())})
            save_tokenizer(tokenizer, tmp / "tokenizer.json")
        run.tag_data_hashes("deps", [IN])
        run.tag_data_hashes("outs", [OUT])
        print(f"tokenize: {cfg.kind} tokens -> {OUT}")


if __name__ == "__main__":
    main()
