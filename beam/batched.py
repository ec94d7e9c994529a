"""The batched engine: the same preprocessing with Arrow batches as Beam elements.

The row-by-row pipeline (`--engine rows`) sends every raw row, every aggregated example
and every serialised record through Beam as an element of its own, and the Python
SDK's per-element cost dominates (issue #15: 16.6K rows/s). Here a Beam element is a
batch of thousands of rows, and the work within a batch is vectorised:

    files -> ReadBatches: per file, blocks of ~8 MB
               -> validate (`BatchValidator`: Arrow CSV + `beam.columns`; rows it
                  cannot vouch for go through `RowValidator`, so the dead letter is
                  the same, row by row)
               -> pre-combine per key within the batch (`sum_by_key`; a worker stops
                  once a batch shrinks by less than 10%, as logs of n = 1 rows do)
               -> cut by the CRC32C of the key into `num_partitions` partitions,
                  each piece a zstd-compressed Arrow IPC file in the staging folder,
                  without the key (the features determine it; `with_keys` rebuilds it)
          -> GroupByKey(partition)
          -> WriteShards: per partition, final sums per key, the split (the same
             rules and hashes as `beam.split`), `encode_batch` and one gzip TFRecord
             shard per split (`split/part-PPPPP-of-NNNNN.tfrecord.gz`), plus the
             partition's totals, numeric moments and vocabulary counts
          -> combines into `metadata.json` and `vocab/` as in the row pipeline.

So the runner shuffles one small element per (batch, partition), a piece's file name:
the rows themselves go through files (on the output's filesystem, so any runner whose
workers share it, as remote runners share gs:// or hdfs://), and a process holds one
batch or one partition at a time rather than the shuffled data (with the pieces shuffled
as elements, the in-process DirectRunner held each twice: 3.65 GB at 10M rows). Every
step is a ParDo, GroupByKey, Flatten, Create or Filter (see `PreprocessBatches`), so it
runs on any runner. Pieces are named by input file, batch and partition, shards by
partition (their rows sorted by key), so a retried bundle rewrites the same files.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import apache_beam as beam
import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam import columns as _columns
from beam import outputs
from beam.aggregate import sum_by_key
from beam.examples import encode_batch, example_fields
from beam.metadata import SPLITS, assemble_metadata
from beam.sources import BlockReader, parquet_rows
from beam.split import VALIDATION_SALT, plan_split
from beam.stats import MergeMomentsFn, batch_moments
from beam.validate import BatchValidator
from beam.vocabulary import batch_value_counts, ordered_values

__all__ = ["PARTITION_BYTES", "PreprocessBatches", "num_partitions"]

PARTITION_BYTES = 32 << 20
"""Input bytes per partition (one TFRecord shard per split) when `--num_shards` is 0."""
# Tags of the items the engine's steps emit (see `_select`).
PIECE, REJECTED, ROWS_READ, BUCKETS, PLAN = "piece", "rejected", "rows_read", "buckets", "plan"
FILES, TOTALS, MOMENTS, VOCABULARY = "files", "totals", "moments", "vocabulary"
DEAD_LETTER, VOCABULARY_SIZE = "dead_letter", "vocabulary_size"
_PARQUET_BATCH = 65536
PIECES_DIR = "_pieces"
"""Where the read step leaves its pieces for the partitions (inside the staging folder,
deleted with it when the run is promoted)."""


def num_partitions(files, num_shards: int = 0) -> int:
    """`num_shards`, or one partition per `PARTITION_BYTES` of input (compressed files
    counted 5x), at least 1 and at most 1024."""
    if num_shards:
        return num_shards
    total = 0
    for result in FileSystems.match(list(files)):
        for found in result.metadata_list:
            compressed = not found.path.lower().endswith((".csv", ".jsonl", ".json",
                                                          ".ndjson", ".parquet", ".pq"))
            total += found.size_in_bytes * (5 if compressed else 1)
    return max(1, min(1024, math.ceil(total / PARTITION_BYTES)))


def _tagged(value, tag: str):
    return tag, value


def _has_tag(item, tag: str) -> bool:
    return item[0] == tag


def _has_any_tag(item, tags) -> bool:
    return item[0] in tags


def _value(item):
    return item[1]


def _select(pcoll, tag: str, label: str):
    """The values of the `(tag, value)` items of `pcoll` with this tag.

    The engine's ParDos have one output of tagged items rather than Beam's tagged
    outputs, which Beam 2.77's DaskRunner merges into one (docs/SCALE.md).
    """
    return (pcoll
            | f"{label}Only" >> beam.Filter(_has_tag, tag)
            | f"{label}Values" >> beam.Map(_value))


class _ReadBatchesFn(beam.DoFn):
    """path -> tagged items: `(PIECE, (partition, piece file))`, an IPC file of
    validated, pre-combined rows, `(REJECTED, [dead-letter dicts])`, `(ROWS_READ, n)` and
    `(BUCKETS, [bucket])` per batch."""

    def __init__(self, spec, input_format, header, partitions, output):
        self._args = (spec, input_format, header)
        self._format, self._partitions, self._output = input_format, partitions, output
        self._validator = None

    def setup(self):
        self._validator = BatchValidator(*self._args)
        self._precombine = True

    def process(self, path):
        validator = self._validator
        names = _piece_names(path)
        if self._format == "parquet":
            rows = []
            for row in parquet_rows(path, list(validator.rows.columns)):
                rows.append(row)
                if len(rows) == _PARQUET_BATCH:
                    yield from self._emit(validator.records(path, rows), next(names))
                    rows = []
            if rows:
                yield from self._emit(validator.records(path, rows), next(names))
            return
        header_pending = self._format == "csv"
        with BlockReader(path, self._format) as reader:
            while (block := reader.next_block()) is not None:
                batch = (validator.csv_block(path, block, header_pending)
                         if self._format == "csv" else None)
                if batch is None:
                    batch = validator.records(path, reader.records(block), header_pending)
                header_pending = header_pending and not batch.header_seen
                yield from self._emit(batch, next(names))

    def _emit(self, batch, name: str):
        if batch.rejected:
            yield REJECTED, batch.rejected
        yield ROWS_READ, batch.rows_read
        table = batch.table
        if self._precombine:
            table, _ = sum_by_key(table, final=False)
            # Logs of mostly distinct keys (n = 1 rows) gain nothing from it.
            self._precombine = table.num_rows < 0.9 * batch.table.num_rows
        if not table.num_rows:
            return
        yield BUCKETS, [b for b in pc.unique(table.column(_columns.BUCKET)).to_pylist()
                        if b is not None]
        partition = _columns.partition_of(table.column(_columns.KEY), self._partitions)
        order = np.argsort(partition, kind="stable")
        table, partition = table.take(pa.array(order)), partition[order]
        starts = np.flatnonzero(np.r_[True, partition[1:] != partition[:-1]])
        ends = np.r_[starts[1:], len(partition)]
        table = table.drop_columns([_columns.KEY])  # rebuilt after the shuffle: half the bytes
        for start, end in zip(starts, ends):
            piece = outputs.output_path(self._output, f"{PIECES_DIR}/{name}-"
                                                      f"{int(partition[start]):05d}.arrow")
            with FileSystems.create(piece, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                fh.write(_columns.to_ipc(table.slice(start, end - start)))
            yield PIECE, (int(partition[start]), piece)


def _piece_names(path: str):
    """`<md5 of the input path>-<batch number>`: the same names when a bundle is retried."""
    prefix = hashlib.md5(path.encode("utf-8")).hexdigest()[:16]
    return (f"{prefix}-{index:07d}" for index in itertools.count())


def _read_piece(path: str) -> pa.Table:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return _columns.from_ipc(fh.read())


def _fraction(hashes: np.ndarray) -> np.ndarray:
    """`beam.split.stable_fraction` of MD5 prefixes: `int / 2**64` as Python computes it."""
    return hashes.astype(np.float64) / 2.0**64


def _split_masks(examples: pa.Table, plan: dict, validation_fraction: float) -> dict:
    """`{split: boolean mask}` by the rules of `beam.split` (`split_index`,
    `validation_index`)."""
    if plan["method"] == "time":
        buckets = examples.column(_columns.BUCKET).to_numpy(zero_copy_only=False)
        eval_ = buckets >= plan["first_eval_bucket"]
    else:
        hashes = _columns.key_hashes(examples.column(_columns.KEY))
        eval_ = _fraction(hashes) < plan["eval_fraction"]
    validation = np.zeros(len(eval_), dtype=bool)
    if validation_fraction > 0:
        salted = _columns.key_hashes(examples.column(_columns.KEY), VALIDATION_SALT)
        validation = ~eval_ & (_fraction(salted) < validation_fraction)
    return {"train": ~eval_ & ~validation, "validation": validation, "eval": eval_}


def _totals(table: pa.Table) -> list:
    """`[examples, clicks, impressions, rows]` with Python ints (sums may pass int64)."""
    return [table.num_rows] + [sum(table.column(name).to_pylist()) for name in
                               (_columns.CLICKS, _columns.IMPRESSIONS, _columns.ROWS)]


class _WriteShardsFn(beam.DoFn):
    """`(partition, [(PLAN, plan) and (PIECE, piece file)...])` -> one shard per split;
    tagged items `(FILES, (split, path))`, `(TOTALS, (split, totals))`, `(MOMENTS,
    (feature, accumulator))`, `(VOCABULARY, (feature, IPC bytes))`, `(REJECTED, [...])`."""

    def __init__(self, spec, output, partitions, validation_fraction):
        self._spec, self._output, self._partitions = spec, output, partitions
        self._validation_fraction = validation_fraction
        self._fields = example_fields(spec)
        self._schema = _columns.table_schema(spec)

    def process(self, element):
        partition, values = element
        plan, tables = None, []
        for kind, payload in values:
            if kind == PLAN:
                plan = payload
            else:
                tables.append(_read_piece(payload))
        table = (_columns.with_keys(self._spec, pa.concat_tables(tables)) if tables
                 else self._schema.empty_table())
        examples, rejected = sum_by_key(table, final=True)
        if rejected:
            yield REJECTED, rejected
        masks = _split_masks(examples, plan, self._validation_fraction)
        for split in SPLITS:
            part = examples.filter(pa.array(masks[split]))
            records = encode_batch(part, self._fields, bool(self._spec.cpc))
            name = outputs.shard_name(split, partition, self._partitions)
            yield FILES, (split, outputs.write_tfrecord_shard(self._output, name, records))
            yield TOTALS, (split, _totals(part))
        train_all = examples.filter(pa.array(~masks["eval"]))
        for f in self._spec.numeric_features:
            yield MOMENTS, (f.name, batch_moments(train_all.column(f.name).to_numpy()))
        for f in self._spec.vocabulary_features:
            counts = batch_value_counts(train_all, f.name, f.is_sequence)
            yield VOCABULARY, (f.name, _columns.to_ipc(counts))


def _plan_for_every_partition(plan: dict, partitions: int):
    return [(p, (PLAN, plan)) for p in range(partitions)]


def _as_piece(item):
    partition, payload = item
    return partition, (PIECE, payload)


def _plan(buckets_lists, plan_split_args: dict) -> dict:
    """`plan_split` of the distinct buckets of every batch."""
    buckets = sorted({b for buckets in buckets_lists for b in buckets})
    return plan_split(buckets, **plan_split_args)


class _WriteDeadLetterFn(beam.DoFn):
    """`(shard, [lists of dead-letter dicts])` -> one JSON-lines file; `(DEAD_LETTER,
    (path, {reason: rows}))`."""

    def __init__(self, output, shards):
        self._output, self._shards = output, shards

    def process(self, element):
        shard, batches = element
        records = [record for batch in batches if batch for record in batch]
        lines = sorted(outputs.dead_letter_line(r) for r in records)
        relative = f"{outputs.DEAD_LETTER_PREFIX}-{shard:05d}-of-{self._shards:05d}.jsonl"
        path = outputs.write_text_file(self._output, relative, "".join(
            line + "\n" for line in lines))
        reasons = {}
        for record in records:
            reasons[record["reason"]] = reasons.get(record["reason"], 0) + record.get("rows", 1)
        yield DEAD_LETTER, (path, reasons)


def _dead_letter_shard(records: list, shards: int):
    """A batch's dead-letter dicts keyed by a shard: the CRC32C of the first one's line."""
    first = outputs.dead_letter_line(records[0]).encode("utf-8")
    return google_crc32c.value(first) % shards, records


def _order_and_write(grouped, min_counts, output):
    name, pieces = grouped
    tables = [_columns.from_ipc(piece) for piece in pieces if piece]
    return VOCABULARY_SIZE, outputs.write_vocabulary(
        (name, ordered_values(tables, min_counts[name])), output)


class _Metadata:
    """The final step: every tagged item of the run -> `metadata.json` (and `spec.json`)."""

    def __init__(self, static: dict, output: str):
        self._static, self._output = static, output

    def __call__(self, grouped):
        _, items = grouped
        rows_read, reasons, plan = 0, {}, None
        totals = {split: [0, 0, 0, 0] for split in SPLITS}
        files = {split: [] for split in SPLITS}
        dead_letter, sizes, moments = [], {}, {}
        merge = MergeMomentsFn()
        for tag, value in items:
            if tag == ROWS_READ:
                rows_read += value
            elif tag == PLAN:
                plan = value
            elif tag == TOTALS:
                split, counts = value
                totals[split] = [a + b for a, b in zip(totals[split], counts)]
            elif tag == FILES:
                files[value[0]].append(value[1])
            elif tag == DEAD_LETTER:
                dead_letter.append(value[0])
                for reason, count in value[1].items():
                    reasons[reason] = reasons.get(reason, 0) + count
            elif tag == VOCABULARY_SIZE:
                sizes[value[0]] = value[1]
            elif tag == MOMENTS:
                name, accumulator = value
                moments[name] = merge.add_input(
                    moments.get(name, merge.create_accumulator()), accumulator)
        stats = {f: merge.extract_output(moments.get(f, merge.create_accumulator()))
                 for f in self._static["numeric_features"]}
        names = ("examples", "clicks", "impressions", "rows")
        per_split = {f"{s}_totals": dict(zip(names, totals[s])) for s in SPLITS}
        per_split.update({f"{s}_files": files[s] for s in SPLITS})
        outputs.write_json(outputs.output_path(self._output, outputs.SPEC_FILE),
                           self._static["spec"])
        metadata = assemble_metadata(None, static=self._static, rows_read=rows_read,
                                     rejected_by_reason=reasons, vocabulary_sizes=sizes,
                                     numeric_stats=stats, split=plan,
                                     dead_letter_files=dead_letter, **per_split)
        outputs.write_json(outputs.output_path(self._output, outputs.METADATA_FILE), metadata)
        return metadata


def _under_one_key(item):
    return None, item


class PreprocessBatches(beam.PTransform):
    """The batched engine from input paths to `metadata.json`: a PCollection holding the
    metadata dict.

    One graph, every branch feeding the last step, with ParDo, GroupByKey, Flatten,
    Create and Filter only: no side inputs, tagged outputs, `finish_bundle` outputs
    or Beam file sinks, so Beam's DaskRunner runs it too.

    Args:
        spec: the `tfddn.spec.FeatureSpec`.
        source: the resolved input (`beam.sources.InputFiles`).
        output: the folder the files go to.
        static: the metadata known at construction (see `beam.metadata.WriteMetadata`).
        plan_split_args: keyword arguments of `beam.split.plan_split` but the buckets.
        validation_fraction: share of the train keys in the validation split.
        partitions: number of partitions, i.e. TFRecord shards per split.
    """

    def __init__(self, spec, source, output, static, plan_split_args, validation_fraction,
                 partitions):
        super().__init__()
        BatchValidator(spec, source.format, source.header)  # fail now, not on workers
        self._spec, self._source, self._output = spec, source, output
        self._static = {**static, "numeric_features": [f.name for f in spec.numeric_features]}
        self._plan_args = plan_split_args
        self._validation_fraction, self._partitions = validation_fraction, partitions

    def expand(self, pbegin):
        spec, output, partitions = self._spec, self._output, self._partitions
        read = (pbegin
                | "Files" >> beam.Create(list(self._source.files))
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadValidateCombine" >> beam.ParDo(_ReadBatchesFn(
                    spec, self._source.format, self._source.header, partitions, output)))
        plan = (_select(read, BUCKETS, "Buckets")
                | "AllBuckets" >> beam.combiners.ToList()
                | "Plan" >> beam.Map(_plan, self._plan_args))
        shards = ((_select(read, PIECE, "Pieces") | "AsPieces" >> beam.Map(_as_piece),
                   plan | "PlanPerPartition" >> beam.FlatMap(_plan_for_every_partition,
                                                             partitions))
                  | "WithPlan" >> beam.Flatten()
                  | "GroupByPartition" >> beam.GroupByKey()
                  | "SumSplitEncodeWrite" >> beam.ParDo(_WriteShardsFn(
                      spec, output, partitions, self._validation_fraction)))
        dead_letter_shards = max(1, partitions // 8)
        dead_letter = ((_select(read, REJECTED, "ReadRejected"),
                        _select(shards, REJECTED, "SumRejected"))
                       | "AllRejected" >> beam.Flatten()
                       | "DeadLetterShard" >> beam.Map(_dead_letter_shard, dead_letter_shards))
        every_shard = pbegin | "EveryDeadLetterShard" >> beam.Create(
            [(shard, None) for shard in range(dead_letter_shards)])
        dead_letter = ((dead_letter, every_shard)  # a file per shard, maybe empty
                       | "WithEveryShard" >> beam.Flatten()
                       | "GroupByDeadLetterShard" >> beam.GroupByKey()
                       | "WriteDeadLetter" >> beam.ParDo(_WriteDeadLetterFn(
                           output, dead_letter_shards)))
        every_feature = pbegin | "EveryVocabularyFeature" >> beam.Create(
            [(f.name, b"") for f in spec.vocabulary_features])
        min_counts = {f.name: f.min_count for f in spec.vocabulary_features}
        vocabulary = ((_select(shards, VOCABULARY, "Vocabulary"), every_feature)
                      | "WithEveryFeature" >> beam.Flatten()
                      | "GroupPerFeature" >> beam.GroupByKey()
                      | "OrderWriteVocabulary" >> beam.Map(_order_and_write, min_counts,
                                                           output))
        return ((read | "RowsRead" >> beam.Filter(_has_tag, ROWS_READ),
                 shards | "Counts" >> beam.Filter(_has_any_tag, (TOTALS, FILES, MOMENTS)),
                 plan | "TaggedPlan" >> beam.Map(_tagged, PLAN),
                 dead_letter, vocabulary)
                | "Everything" >> beam.Flatten()
                | "UnderOneKey" >> beam.Map(_under_one_key)
                | "Gather" >> beam.GroupByKey()
                | "WriteMetadata" >> beam.Map(_Metadata(self._static, output)))
