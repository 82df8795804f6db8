"""Reads offline wandb run files (`run-<id>.wandb`) back into Python, via wandb's own protobufs.

wandb (0.31) ships no Python reader for these files: the writer and reader live in the Go
`wandb-core` binary (`core/pkg/leveldb`, `core/internal/transactionlog`). The format is the
LevelDB log format with a W&B file header:

  file   := header block*
  header := ident ":W&B" (4 bytes), magic 0xBEE1 (uint16 LE), version (uint8; 0 in wandb 0.31)
  block  := 32 KiB (the first block includes the 7-byte file header; the last may be short)
            holding chunks packed tightly; a chunk never crosses a block boundary, and when
            fewer than 7 bytes are left in a block they are zero padding
  chunk  := crc (uint32 LE), length (uint16 LE), type (uint8: 1 full, 2 first, 3 middle,
            4 last), payload (`length` bytes)

The crc is the plain, unmasked CRC-32 (IEEE, as `zlib.crc32`) of the type byte followed by
the payload (wandb-core writes with `CRCAlgoIEEE`, not LevelDB's masked crc32c); it is checked.
Concatenating the payloads of a full chunk, or of a first, middles and last chunk, gives one
serialized `wandb.proto.wandb_internal_pb2.Record`.

Damage: a file cut short (a run still being written, or killed) yields every complete record
before the cut and then stops silently. A corrupt record (crc mismatch, impossible length or
chunk order, or a payload that does not parse) stops reading with a warning, or raises
`ValueError` with `strict=True`. Unlike wandb-core, no attempt is made to resync at the next
block after corruption.

`run.finish()` does not wait for wandb-core to close the file (it only informs it), so a reader
in the same process can see a cut tail right after it; call `wandb.teardown()` first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2

IDENT = b":W&B"
MAGIC = 0xBEE1
# wandb 0.31 writes 0. Some newer wandb-core sources write 1 (what changed is unverified); such
# files are refused rather than misread (add 1 here once the reader is checked against one).
VERSIONS = (0,)
FILE_HEADER_LEN = 7
BLOCK_LEN = 32 * 1024
CHUNK_HEADER_LEN = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

_CHUNK_HEADER = struct.Struct("<IHB")
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}
_RUN_FILE = re.compile(r"run-(.+)\.wandb$")


@dataclasses.dataclass
class OfflineRun:
  """What one run logged: config, history rows, summary, exit code, and every raw record."""

  run_id: str
  config: dict  # user config, JSON-decoded and nested as given to wandb (no `_wandb` key)
  history: list[dict]  # one dict per committed step, including `_step`, `_runtime`, ...
  summary: dict  # summary after applying every summary record in order
  records: list  # all `wandb_internal_pb2.Record`s, in file order
  exit_code: int | None  # None when the file has no exit record (run unfinished or killed)


class _Corrupt(Exception):
  """A damaged chunk: args are (file offset, reason)."""


def find_offline_runs(wandb_dir: str) -> list[str]:
  """Sorted paths of the `run-*.wandb` files under `wandb_dir` (symlinks such as
  `latest-run` are not followed, so each run appears once)."""
  found = []
  for root, _, files in os.walk(wandb_dir):
    found.extend(os.path.join(root, f) for f in files if _RUN_FILE.match(f))
  return sorted(found)


def read_records(path: str, *, strict: bool = False) -> Iterator[wandb_internal_pb2.Record]:
  """Yields the records of a `.wandb` file in order (see the module docstring on damage).

  Raises `ValueError` if the file header is not a supported W&B header.
  """
  with open(path, "rb") as f:
    payloads = _payloads(f, path)
    while True:
      try:
        offset, payload = next(payloads)
      except StopIteration:
        return
      except _Corrupt as e:
        _report(path, *e.args, strict=strict)
        return
      record = wandb_internal_pb2.Record()
      try:
        record.ParseFromString(payload)
      except DecodeError as e:
        _report(path, offset, f"unparseable record ({e})", strict=strict)
        return
      yield record


def read_offline_run(path: str, *, strict: bool = False) -> OfflineRun:
  """Reads an offline wandb run and assembles config, history, summary and exit code.

  Args:
    path: a `run-<id>.wandb` file, or a folder holding them: a gmf_jax run folder (its
      `wandb/`) or a wandb folder. A resumed run logs each session to a file of its own, under
      one run id; they are read in order (their folders are named by start time) as one run.
    strict: raise `ValueError` at a corrupt record instead of warning and stopping there.

  Raises:
    FileNotFoundError: no `.wandb` file at or under `path`.
    ValueError: files of more than one run id under `path` (read each with
      `find_offline_runs`), or a file that is not a W&B file.
  """
  if os.path.isdir(path):
    files = find_offline_runs(path)
    if not files:
      raise FileNotFoundError(f"{path} holds no offline wandb run (no run-*.wandb file under "
                              "it); was wandb.mode 'disabled' for this run?")
    ids = sorted({_RUN_FILE.search(os.path.basename(f)).group(1) for f in files})
    if len(ids) > 1:
      raise ValueError(f"{path} holds {len(ids)} wandb runs ({', '.join(ids)}); read one file "
                       "of find_offline_runs(path) at a time.")
    files = sorted(files, key=lambda f: os.path.basename(os.path.dirname(f)))
  else:
    files = [path]
  records = [r for f in files for r in read_records(f, strict=strict)]
  run_id = _run_id(records, files[0])
  config: dict = {}
  summary: dict = {}
  history: list[dict] = []
  exit_code = None
  for record in records:
    kind = record.WhichOneof("record_type")
    if kind == "run":
      _apply(config, record.run.config.update, record.run.config.remove)
    elif kind == "config":
      _apply(config, record.config.update, record.config.remove)
    elif kind == "summary":
      _apply(summary, record.summary.update, record.summary.remove)
    elif kind == "history":
      row: dict = {}
      _apply(row, record.history.item, ())
      if "_step" not in row and record.history.HasField("step"):
        row["_step"] = record.history.step.num
      history.append(row)
    elif kind == "exit":
      exit_code = record.exit.exit_code
  config.pop("_wandb", None)
  return OfflineRun(run_id=run_id, config=config, history=history, summary=summary,
                    records=records, exit_code=exit_code)


def _payloads(f: BinaryIO, path: str) -> Iterator[tuple[int, bytes]]:
  """Yields (file offset, payload) per reassembled record; raises `_Corrupt`."""
  block = f.read(BLOCK_LEN)
  header = block[:FILE_HEADER_LEN]
  if len(header) < FILE_HEADER_LEN or header[:4] != IDENT:
    raise ValueError(f"{path}: not a .wandb file (header {header!r})")
  magic, version = struct.unpack("<HB", header[4:])
  if magic != MAGIC or version not in VERSIONS:
    raise ValueError(f"{path}: unsupported .wandb header (magic {magic:#x}, version {version})")
  block_start, pos = 0, FILE_HEADER_LEN
  parts: list[bytes] = []
  record_start = 0
  while True:
    if len(block) - pos < CHUNK_HEADER_LEN:
      if len(block) < BLOCK_LEN:
        return  # end of file; a partial chunk header or an unfinished record is a cut tail
      block_start += BLOCK_LEN
      block, pos = f.read(BLOCK_LEN), 0
      continue
    offset = block_start + pos
    crc, length, kind = _CHUNK_HEADER.unpack_from(block, pos)
    if crc == 0 and length == 0 and kind == 0:
      if parts:
        raise _Corrupt(offset, "zeroed chunk header inside a record")
      pos = len(block)  # a zeroed rest of block: skip it, as wandb-core does
      continue
    start, end = pos + CHUNK_HEADER_LEN, pos + CHUNK_HEADER_LEN + length
    if end > len(block):
      if len(block) < BLOCK_LEN:
        return  # the payload runs past the end of the file: a cut tail
      raise _Corrupt(offset, f"chunk length {length} overflows its block")
    payload = block[start:end]
    if kind not in _TYPE_CRC:
      raise _Corrupt(offset, f"unknown chunk type {kind}")
    if zlib.crc32(payload, _TYPE_CRC[kind]) != crc:
      raise _Corrupt(offset, "checksum mismatch")
    pos = end
    if kind in (FULL, FIRST):
      if parts:
        raise _Corrupt(offset, "new record starts before the previous one ended")
      record_start = offset
      if kind == FULL:
        yield offset, payload
      else:
        parts.append(payload)
    else:
      if not parts:
        raise _Corrupt(offset, "continuation chunk without a first chunk")
      parts.append(payload)
      if kind == LAST:
        data, parts = b"".join(parts), []
        yield record_start, data


def _report(path: str, offset: int, why: str, *, strict: bool) -> None:
  message = f"{path}: corrupt record at byte {offset}: {why}; stopped reading there"
  if strict:
    raise ValueError(message)
  warnings.warn(message, stacklevel=2)


def _apply(target: dict, updates: Iterable[Any], removes: Iterable[Any]) -> None:
  """Applies wandb `*Item`s (`key` or `nested_key`, `value_json`) to a nested dict."""
  for item in updates:
    keys = _keys(item)
    node = target
    for key in keys[:-1]:
      child = node.get(key)
      if not isinstance(child, dict):
        child = node[key] = {}
      node = child
    node[keys[-1]] = json.loads(item.value_json)
  for item in removes:
    keys = _keys(item)
    node = target
    for key in keys[:-1]:
      node = node.get(key)
      if not isinstance(node, dict):
        break
    else:
      node.pop(keys[-1], None)


def _keys(item: Any) -> list[str]:
  return list(item.nested_key) if item.nested_key else [item.key]


def _run_id(records: list, path: str) -> str:
  for record in records:
    if record.WhichOneof("record_type") == "run" and record.run.run_id:
      return record.run.run_id
  for record in records:
    if record._info.stream_id:
      return record._info.stream_id
  match = _RUN_FILE.search(os.path.basename(path))
  return match.group(1) if match else ""
