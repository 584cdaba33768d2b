"""Read a .json list or .jsonl file record by record, as XTuner will, and never crash on it.

XTuner's ``load_json_or_jsonl`` calls ``json.load`` on a .json file and ``json.loads`` on every
line of a .jsonl file (lines as Python's text mode splits them: ``\\n``, ``\\r\\n``, ``\\r``;
never U+2028). This reader follows the same rules but reports instead of raising:

* a .jsonl line that XTuner would fail on -- not JSON, or blank -- becomes an
  :class:`InvalidRecord` at its own index, so record *i* is line *i + 1* and the count stays
  honest (``checked == valid + rejected``);
* nesting deeper than :data:`MAX_DEPTH` (a whole file, one record or one line) is reported
  as ``too_deep`` instead of ending in ``RecursionError``; a .json list whose parse
  overflows is re-read element by element so that only the deep records are rejected;
* numbers Python refuses (more than 4,300 digits) are an ``invalid_json`` record, not a
  ``ValueError``.

Example:
    >>> problems = []
    >>> read_json_records("missing.jsonl", problems), problems[0].kind
    (None, 'unreadable_file')
"""
from __future__ import annotations

import json
import re

from helpers.data.check_report import Problem

MAX_DEPTH = 64  # LLaVA and FoodieQA records nest 3-4 levels; beyond this is not data
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what Python's text-mode file iteration splits on
_WS = " \t\n\r"
# A JSON string, or one bracket; everything else between them is skipped.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


class InvalidRecord(str):
    """A record that could not be read; kept in its place so it is counted and rejected.

    ``kind`` is the problem kind (``invalid_json``, ``blank_line``, ``too_deep``); the string is
    the message.
    """

    def __new__(cls, message: str, kind: str = "invalid_json"):
        obj = super().__new__(cls, message)
        obj.kind = kind
        return obj


def not_a_record(rec) -> list:
    """The one problem that makes ``rec`` unusable as a record, or [] for a JSON object.

    Args:
        rec: an item of :func:`read_json_records` (a dict, an :class:`InvalidRecord`, or any JSON value).

    Returns:
        ``[(None, kind, message, "error")]`` or ``[]``.

    Example:
        >>> not_a_record([1])[0][1]
        'wrong_type'
    """
    if isinstance(rec, InvalidRecord):
        return [(None, rec.kind, str(rec), "error")]
    if not isinstance(rec, dict):
        return [(None, "wrong_type", f"record must be an object, got {type(rec).__name__}", "error")]
    return []


def read_json_records(file, problems: list) -> list | None:
    """Load a .json list or a .jsonl file; file-level failures go to ``problems``.

    Args:
        file: the data file (``.jsonl`` by suffix, else a JSON list).
        problems: list that receives :class:`helpers.data.checks.Problem` for the whole file.

    Returns:
        The records -- unreadable ones as :class:`InvalidRecord` -- or None when nothing
        could be read (the reason is in ``problems``).

    Example:
        >>> read_json_records("train.jsonl", [])  # doctest: +SKIP
    """
    name = str(file)

    def fail(kind, message):
        problems.append(Problem(name, None, None, kind, message))

    try:
        with open(file, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        fail("unreadable_file", f"cannot read: {e}")
        return None
    except UnicodeDecodeError as e:
        fail("invalid_json", f"not UTF-8: {e}")
        return None
    except ValueError as e:  # a NUL byte in the file name
        fail("unreadable_file", f"cannot open: {e}")
        return None
    if name.endswith(".jsonl"):
        return [_parse_line(n + 1, line) for n, line in enumerate(jsonl_lines(text))]
    try:
        data = json.loads(text)
    except RecursionError:
        data = _parse_list_by_element(text)
        if isinstance(data, InvalidRecord):
            fail(data.kind, str(data))
            return None
    except ValueError as e:  # JSONDecodeError, or an integer Python refuses to convert
        where = f"line {e.lineno} col {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)
        fail("invalid_json", where)
        return None
    if not isinstance(data, list):
        fail("wrong_top_level_type", f"top level must be a list of records, got {type(data).__name__}")
        return None
    return [_depth_checked(rec, f"record {i}") for i, rec in enumerate(data)]


def jsonl_lines(text: str) -> list:
    """The lines XTuner's ``for line in f`` yields, without their line breaks.

    Example:
        >>> jsonl_lines('{"a": "x\\u2028y"}\\n\\n{}\\n')
        ['{"a": "x\\u2028y"}', '', '{}']
    """
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":  # the break after the last line does not start a new one
        lines.pop()
    return lines


def _parse_line(number: int, line: str):
    if not line.strip():
        return InvalidRecord(f"line {number} is blank; XTuner's loader runs json.loads on every line "
                             "and fails on it (delete the line)", "blank_line")
    try:
        return _depth_checked(json.loads(line), f"line {number}")
    except RecursionError:
        return _too_deep(f"line {number}")
    except json.JSONDecodeError as e:
        return InvalidRecord(f"line {number} is not JSON: col {e.colno}: {e.msg}")
    except ValueError as e:
        return InvalidRecord(f"line {number} is not JSON Python can read: {e}")


def _too_deep(where: str) -> InvalidRecord:
    return InvalidRecord(f"{where} is nested more than {MAX_DEPTH} levels deep", "too_deep")


def _depth_checked(value, where: str):
    """``value``, or an InvalidRecord when it nests deeper than MAX_DEPTH (checked without recursion)."""
    if not isinstance(value, (list, dict)):
        return value
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return _too_deep(where)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (list, dict)))
    return value


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _skip_container(text: str, pos: int) -> int:
    """End position of the array/object starting at ``pos``, found without recursion."""
    depth = 0
    for m in _TOKEN.finditer(text, pos):
        tok = m.group()
        if tok in "[{":
            depth += 1
        elif tok in "]}":
            depth -= 1
            if depth == 0:
                return m.end()
    return len(text)


def _parse_list_by_element(text: str):
    """A top-level list too deep for ``json.loads``: decode it one element at a time.

    Returns the records (too-deep ones as InvalidRecord) or an InvalidRecord for the file.
    """
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        return _too_deep("the file")
    pos, records = _skip_ws(text, pos + 1), []
    if text.startswith("]", pos):
        return records
    while True:
        where = f"record {len(records)}"
        try:
            value, pos = decoder.raw_decode(text, pos)
            records.append(_depth_checked(value, where))
        except RecursionError:
            records.append(_too_deep(where))
            pos = _skip_container(text, pos)
        except ValueError as e:
            return InvalidRecord(f"{where}: {getattr(e, 'msg', e)}")
        pos = _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith("]", pos) and not text[pos + 1:].strip(_WS):
            return records
        else:
            return InvalidRecord(f"{where}: expected ',' or ']' at char {pos}")
