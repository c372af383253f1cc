"""The Great Expectations suite over the token stats and the vocabulary, with Data Docs.

Tables checked (one expectation suite each):

* ``train.stats`` / ``valid.stats`` / ``test.stats`` — one row per line: the split is not empty,
  tokens per line lie within bounds, no line holds a control character;
* ``vocab`` — one row per entry: entries are unique and non-empty, the specials are present, no entry
  holds a control character;
* ``oov`` — one row per held-out split: the out-of-vocabulary rate is under the ceiling.

The sequence-to-sequence task's pairs have their own suite (``pair_expectations``):

* ``train.pairs`` / ``valid.pairs`` / ``test.pairs`` — one row per pair: the split is not empty,
  neither side is empty or longer than the maximum length, no token holds a control character;
* ``source.vocab`` / ``target.vocab`` — as ``vocab`` above, with ``<pad>`` among the specials;
* ``oov`` — one row per held-out split and side: the out-of-vocabulary rate of the sources is under
  the ceiling (the targets' is reported: an unseen target symbol can never be produced).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from seqlab.vocab import PAIR_SPECIALS, SPECIALS

SUITE = "seqlab"
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f]"


@dataclass(frozen=True)
class Failure:
    table: str
    expectation: str
    kwargs: dict
    detail: str

    def __str__(self) -> str:
        args = ", ".join(f"{k}={_plain(v)!r}" for k, v in self.kwargs.items())
        return f"{self.table}: {self.expectation}({args}) {self.detail}"


def _plain(value):
    """GE stores bounds as floats; show 5.0 as 5."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def expectations(min_tokens: int, max_tokens: int, max_oov_rate: float, splits=("train", "valid", "test")) -> dict:
    """The suite, table by table."""
    import great_expectations as gx

    E = gx.expectations
    suite = {
        f"{split}.stats": [
            E.ExpectTableRowCountToBeBetween(min_value=1),
            E.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=min_tokens, max_value=max_tokens),
            E.ExpectColumnValuesToBeBetween(column="n_control", min_value=0, max_value=0),
        ]
        for split in splits
    }
    suite["vocab"] = vocab_expectations(SPECIALS)
    suite["oov"] = [E.ExpectColumnValuesToBeBetween(column="oov_rate", min_value=0, max_value=max_oov_rate)]
    return suite


def vocab_expectations(specials: tuple[str, ...]) -> list:
    """A vocabulary table (one row per entry): unique, non-empty entries with the specials, no control characters."""
    import great_expectations as gx

    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeUnique(column="token"),
        E.ExpectColumnValueLengthsToBeBetween(column="token", min_value=1),
        E.ExpectColumnDistinctValuesToContainSet(column="token", value_set=list(specials)),
        E.ExpectColumnValuesToNotMatchRegex(column="token", regex=CONTROL_CHARACTERS),
    ]


def pair_expectations(max_length: int, max_oov_rate: float, splits=("train", "valid", "test")) -> dict:
    """The pairs' suite, table by table."""
    import great_expectations as gx

    E = gx.expectations
    suite = {
        f"{split}.pairs": [
            E.ExpectTableRowCountToBeBetween(min_value=1),
            E.ExpectColumnValuesToBeBetween(column="source_tokens", min_value=1, max_value=max_length),
            E.ExpectColumnValuesToBeBetween(column="target_tokens", min_value=1, max_value=max_length),
            E.ExpectColumnValuesToNotMatchRegex(column="text", regex=CONTROL_CHARACTERS),
        ]
        for split in splits
    }
    for side in ("source", "target"):
        suite[f"{side}.vocab"] = vocab_expectations(PAIR_SPECIALS)
    suite["oov"] = [E.ExpectColumnValuesToBeBetween(column="source_oov_rate", min_value=0, max_value=max_oov_rate)]
    return suite


def run_suite(tables: dict[str, pd.DataFrame], suite: dict, docs_dir: Path) -> tuple[dict, list[Failure]]:
    """Validate each table against its expectations; render Data Docs HTML into ``docs_dir``.

    Returns the JSON-ready result and the failed expectations. Uses an ephemeral (in-memory)
    context: nothing is written but ``docs_dir``.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            data_docs_sites={
                "docs": {
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(Path(docs_dir).resolve()),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                }
            },
        ),
    )
    source = context.data_sources.add_pandas(name="seqlab")
    results, failures = {}, []
    for table, frame in tables.items():
        batch = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("all")
        expectation_suite = context.suites.add(gx.ExpectationSuite(name=f"{SUITE}.{table}"))
        for expectation in suite[table]:
            expectation_suite.add_expectation(expectation.copy(update={"id": None}, deep=True))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{SUITE}.{table}", data=batch, suite=expectation_suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
        described = result.describe_dict()
        for entry, raw in zip(described["expectations"], result.results):
            entry.pop("exception_info", None)
            if "partial_missing_list" in (entry.get("result") or {}):  # built from a set: order varies
                entry["result"]["partial_missing_list"].sort(key=str)
            if not entry["success"]:
                failures.append(_failure(table, entry, raw, len(frame)))
        results[table] = described
    context.build_data_docs(site_names=["docs"])
    return {"success": not failures, "suite": SUITE, "tables": results}, failures


def _failure(table: str, entry: dict, raw, rows: int) -> Failure:
    kwargs = {k: v for k, v in entry["kwargs"].items() if k not in ("batch_id",) and v is not None}
    result = entry.get("result") or {}
    info = raw.exception_info or {}
    raised = [part for part in [info, *info.values()] if isinstance(part, dict) and part.get("raised_exception")]
    if raised:
        detail = f"could not be evaluated: {raised[0].get('exception_message')}"
    elif result.get("unexpected_count") is not None:
        examples = ", ".join(repr(v) for v in (result.get("partial_unexpected_list") or [])[:3])
        detail = f"failed for {result['unexpected_count']} of {rows} rows" + (f" (e.g. {examples})" if examples else "")
    elif result.get("partial_missing_list"):
        detail = f"failed: missing {', '.join(map(repr, result['partial_missing_list']))}"
    else:
        detail = f"failed (observed {result.get('observed_value')!r})"
    return Failure(table, entry["expectation_type"], kwargs, detail)


def validate_into(out: str | Path, tables: dict[str, pd.DataFrame], suite: dict, run, deps: list[str]) -> int:
    """What both validation stages do: run ``suite`` over ``tables`` into ``out`` (``result.json`` and
    Data Docs), log it to the stage's ``run``, and raise one SeqLabError naming every failed
    expectation (the result and the docs stay, to look at). Returns the number of expectations."""
    from seqlab.errors import SeqLabError
    from seqlab.io import atomic_path, write_json

    with atomic_path(out) as tmp:
        tmp.mkdir()
        result, failures = run_suite(tables, suite, tmp / "docs")
        write_json(tmp / "result.json", result)
    checked = sum(len(v) for v in suite.values())
    run.log_metrics({"expectations": checked, "failed_expectations": len(failures)})
    run.log_artifact(f"{out}/result.json")
    run.log_artifact(f"{out}/docs", "data_docs")
    run.tag_data_hashes("deps", deps)
    if failures:
        raise SeqLabError(f"validation failed, {len(failures)} of {checked} expectations: {'; '.join(map(str, failures))} "
                          f"(see {out}/docs/index.html)")
    run.tag_data_hashes("outs", [f"{out}/result.json", f"{out}/docs"])
    return checked
