"""The scalar key-value metadata of a GGUF file, read without llama.cpp.

describe() and the default context length need a few keys (chat template, trained context) on
runs that never load the model. gguf-py's GGUFReader parses every array (the 49k-entry vocabulary,
all tensor infos) and takes seconds; this reads the header once through mmap and skips arrays.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

MAGIC = b"GGUF"
STRING, ARRAY = 8, 9
# value type -> struct format (little-endian) of the fixed-size scalar types
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

Scalar = int | float | bool | str


class GGUFFormatError(ValueError):
    pass


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> Scalar:
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = int(self.take("<Q"))
        if self.at + length > len(self.data):
            raise GGUFFormatError("string runs past the end of the file")
        text = bytes(self.data[self.at : self.at + length]).decode("utf-8", errors="replace")
        self.at += length
        return text

    def skip_array(self) -> None:
        item_type, count = int(self.take("<I")), int(self.take("<Q"))
        if item_type in SCALARS:
            self.at += count * struct.calcsize(SCALARS[item_type])
        elif item_type == STRING:
            for _ in range(count):
                length = int(self.take("<Q"))  # read before adding: `at += take()` loses take's advance
                self.at += length
        elif item_type == ARRAY:
            for _ in range(count):
                self.skip_array()
        else:
            raise GGUFFormatError(f"unknown array item type {item_type}")


def read_metadata(path: str | Path) -> dict[str, Scalar]:
    """Every scalar and string key of the file's metadata (arrays are left out)."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data)
        if bytes(data[:4]) != MAGIC:
            raise GGUFFormatError(f"{path} is not a GGUF file")
        cursor.at = 4
        found: dict[str, Scalar] = {}
        try:
            version = cursor.take("<I")
            if version not in (2, 3):
                raise GGUFFormatError(f"unsupported GGUF version {version}")
            cursor.take("<Q")  # tensor count
            kv_count = int(cursor.take("<Q"))
            for _ in range(kv_count):
                key = cursor.string()
                value_type = int(cursor.take("<I"))
                if value_type == STRING:
                    found[key] = cursor.string()
                elif value_type == ARRAY:
                    cursor.skip_array()
                elif value_type in SCALARS:
                    found[key] = cursor.take(SCALARS[value_type])
                else:
                    raise GGUFFormatError(f"unknown value type {value_type} for {key}")
        except struct.error as error:
            raise GGUFFormatError(f"truncated GGUF header in {path}") from error
        return found


def trained_context(metadata: dict[str, Scalar]) -> int | None:
    value = metadata.get(f"{metadata.get('general.architecture')}.context_length")
    return int(value) if isinstance(value, int) else None
