"""Canonical JSON per RFC 8785 (JSON Canonicalization Scheme, "JCS").

:func:`canonical_json` turns a JSON-able Python value into the one byte string RFC 8785 defines for it, so that
the same data always hashes and signs the same way, whatever produced it:

* objects: members sorted by their names as arrays of UTF-16 code units (RFC 8785 §3.2.3), no whitespace;
* strings: UTF-8, with the minimal escaping of §3.2.2.2 (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other
  controls below U+0020 as ``\\u00xx`` lower-case; everything else, ``/`` and U+007F included, literally);
* numbers: ECMAScript ``Number.prototype.toString`` of the IEEE-754 double (§3.2.2.3): ``1.0 -> 1``,
  ``1e21 -> 1e+21``, ``1e-7 -> 1e-7``, ``-0 -> 0``. NaN and the infinities have no JSON form and are refused.

Python values accepted: ``dict``/``Mapping`` with ``str`` keys, ``list``/``tuple``, ``str``, ``bool``, ``int``
(within ±(2**53 - 1), the range a double holds exactly; larger integers are refused rather than silently
rounded: store them as strings), ``float``, ``None``; numpy scalars (``np.float64``, ``np.int64``, ``np.bool_``,
``np.str_``...) are converted with ``.item()``; ``pandas.NA`` and ``pandas.NaT`` become ``null``. Anything else
raises :class:`CanonicalJSONError` naming the JSON path of the bad value (``$.gates.toxicity.score``).

Reference: RFC 8785, https://www.rfc-editor.org/rfc/rfc8785 (Appendix B lists the number test vectors).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping
from decimal import Decimal
from json.encoder import encode_basestring as _encode_str  # C-accelerated; escapes exactly the §3.2.2.2 set
from typing import Any

__all__ = ["CanonicalJSONError", "canonical_json", "canonical_members", "format_number", "sha256_hex", "digest_of",
           "child_path"]

MAX_SAFE_INTEGER = 2**53 - 1
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CanonicalJSONError(ValueError):
    """A value has no RFC 8785 form (NaN, Infinity, unsupported type, non-str key, lone surrogate...).

    Attributes:
        path: JSON path of the offending value, e.g. ``$.gates.toxicity.score`` or ``$.rows[3]``.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def child_path(path: str, key: str) -> str:
    """The JSON path of member ``key`` under ``path``: ``$.a`` for identifiers, ``$["odd key"]`` otherwise."""
    return f"{path}.{key}" if _IDENTIFIER.match(key) else f"{path}[{json.dumps(key)}]"


def format_number(value: float | int, path: str = "$") -> str:
    """Serialise a number the way ECMAScript ``Number.prototype.toString`` does (RFC 8785 §3.2.2.3).

    Args:
        value: a finite float, or an int within ±(2**53 - 1).
        path: JSON path used in the error message.
    Returns:
        The number's text, e.g. ``"1"`` for 1.0, ``"1e+21"`` for 1e21, ``"1e-7"`` for 1e-7, ``"0"`` for -0.0.
    Raises:
        CanonicalJSONError: NaN, ±Infinity, or an integer a double cannot hold exactly.
    """
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return str(value)  # every safe integer is < 1e21, where ES prints plain digits
        raise CanonicalJSONError(path, f"integer {value} is outside ±(2**53-1); an IEEE-754 double cannot hold it "
                                       "exactly (store it as a string)")
    if math.isnan(value) or math.isinf(value):
        raise CanonicalJSONError(path, f"{value!r} has no JSON representation "
                                       "(RFC 8785 §3.2.2.3 forbids NaN/Infinity)")
    if value == 0:
        return "0"  # also -0.0
    text = repr(value)
    if "e" not in text:  # repr's fixed notation (1e-4 <= |x| < 1e16) is ECMAScript's, less a trailing ".0"
        return text[:-2] if text.endswith(".0") else text
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digit string that round-trips (as ECMAScript requires); re-layout it.
    dec = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, dec.digits)).lstrip("0")
    stripped = digits.rstrip("0")
    exponent = int(dec.exponent) + (len(digits) - len(stripped))
    digits = stripped
    n = len(digits) + exponent  # value = 0.d1d2...dk * 10**n
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exp_text = ("+" if e >= 0 else "-") + str(abs(e))
        out = digits + "e" + exp_text if k == 1 else digits[0] + "." + digits[1:] + "e" + exp_text
    return sign + out


def _normalise_scalar(value: Any) -> Any:
    """numpy scalars -> Python scalars; pandas NA/NaT -> None (modules looked up only if already imported)."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic):
        return value.item()
    pd = sys.modules.get("pandas")
    if pd is not None and (value is pd.NA or value is pd.NaT):
        return None
    return value


# A path is built lazily as nested tuples (parent, key-or-index) and rendered only for an error message.
_Path = tuple


def _render(path: _Path | None) -> str:
    parts: list[str | int] = []
    while path is not None:
        path, seg = path
        parts.append(seg)
    text = "$"
    for seg in reversed(parts):
        text = f"{text}[{seg}]" if isinstance(seg, int) else child_path(text, seg)
    return text


def _sort_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _encode(value: Any, path: _Path | None, out: list[str]) -> None:
    t = type(value)
    if t is str:
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif t is int or t is float:
        out.append(_number(value, path))
    elif t is dict or isinstance(value, Mapping):
        keys = list(value)
        for key in keys:
            if type(key) is not str:
                raise CanonicalJSONError(_render(path), f"object key {key!r} is a {type(key).__name__}, "
                                                        "JSON keys must be str")
        if all(map(str.isascii, keys)):
            keys.sort()  # ASCII: code point order is UTF-16 code unit order
        else:
            keys.sort(key=_sort_key)
        out.append("{")
        first = True
        for key in keys:
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _encode(value[key], (path, key), out)
        out.append("}")
    elif t is list or t is tuple or isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, (path, i), out)
        out.append("]")
    elif isinstance(value, str):  # str subclasses (np.str_, enums)
        out.append(_encode_str(str(value)))
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, (int, float)):  # int/float subclasses (IntEnum...)
        out.append(_number(int(value) if isinstance(value, int) else float(value), path))
    else:
        normalised = _normalise_scalar(value)
        np = sys.modules.get("numpy")
        if normalised is not value:
            _encode(normalised, path, out)
        elif np is not None and isinstance(value, np.ndarray):
            _encode(value.tolist(), path, out)
        else:
            raise CanonicalJSONError(_render(path), f"{type(value).__module__}.{type(value).__qualname__} is not "
                                                    "JSON-able (convert it to str/number/bool/None/list/dict first)")


def _number(value: int | float, path: _Path | None) -> str:
    if type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return str(value)
    try:
        return format_number(value)
    except CanonicalJSONError as exc:
        raise CanonicalJSONError(_render(path), exc.reason) from None


def _find_bad_string(value: Any, path: _Path | None) -> None:
    """Raise for the first string (key or value) that is not valid Unicode (a lone surrogate)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CanonicalJSONError(_render(path), f"string is not valid Unicode (lone surrogate at "
                                                    f"{exc.start})") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _find_bad_string(key, path)
            _find_bad_string(item, (path, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _find_bad_string(item, (path, i))


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` to its RFC 8785 canonical JSON bytes (UTF-8).

    Args:
        obj: a JSON-able value (see the module docstring for the accepted Python types).
    Returns:
        The canonical UTF-8 bytes, no trailing newline.
    Raises:
        CanonicalJSONError: a value has no canonical form; the message names its JSON path.
    """
    out: list[str] = []
    _encode(obj, None, out)
    text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        _find_bad_string(obj, None)
        raise CanonicalJSONError("$", "contains a string that is not valid Unicode") from None


def canonical_members(obj: Mapping[str, Any]) -> tuple[bytes, dict[str, bytes]]:
    """``canonical_json(obj)`` of a JSON object together with the canonical bytes of each member's value.

    The object's bytes are assembled from its members' (``{"k":v,...}`` in RFC 8785 member order), so a caller
    that needs both — the lineage pack digests every field of a record *and* writes the whole record — encodes
    each value once instead of twice. Errors name the path from the object (``$.gates.toxicity.score``).
    """
    if not isinstance(obj, Mapping):
        raise CanonicalJSONError("$", f"expected an object, found {type(obj).__name__}")
    parts: dict[str, bytes] = {}
    for key, value in obj.items():
        if type(key) is not str:
            return canonical_json(obj), {}  # raises with the message of the full encoder
        try:
            parts[key] = canonical_json(value)
        except CanonicalJSONError as exc:
            raise CanonicalJSONError(child_path("$", key) + exc.path[1:], exc.reason) from None
    keys = list(parts)
    if all(map(str.isascii, keys)):
        keys.sort()
    else:
        keys.sort(key=_sort_key)
    try:
        encoded = [_encode_str(k).encode("utf-8") for k in keys]
    except UnicodeEncodeError:
        canonical_json(obj)  # a lone surrogate in a key: raise as the full encoder does
        raise
    whole = b"{" + b",".join(k + b":" + parts[key] for k, key in zip(encoded, keys)) + b"}"
    return whole, parts


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest_of(value: Any) -> str:
    """SHA-256 hex of ``canonical_json(value)``: the digest of one field's value used in lineage records."""
    return sha256_hex(canonical_json(value))
