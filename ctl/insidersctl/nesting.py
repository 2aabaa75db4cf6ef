"""How deep a msgpack message nests, read from its bytes without decoding them.

A typed msgspec decoder skips the fields it does not know (so an older daemon reads a newer
client's requests), and it skips them recursively: an unknown field of 60,000 nested arrays, in
a 60 kB frame, ended in a RecursionError and no reply. `too_deep` walks the message with a stack of
counts instead, so the depth can be refused, with a reply, before the decoder sees it.
"""

from __future__ import annotations

# Formats of a fixed size: first byte -> bytes that follow it.
_FIXED = {
    0xC0: 0, 0xC2: 0, 0xC3: 0,  # nil, false, true
    0xCA: 4, 0xCB: 8,  # floats
    0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,  # unsigned
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,  # signed
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,  # fixext: type byte + data
}  # fmt: skip
# Formats with a length: first byte -> (bytes of the length, extra bytes before the data).
_SIZED = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext: length, type byte
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str
}  # fmt: skip
# Containers: first byte -> (bytes of the count, items per count).
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def too_deep(body: bytes, limit: int) -> bool:
    """Does `body` nest containers (arrays, maps) more than `limit` deep? A malformed or truncated
    body is not judged here: the decoder says what is wrong with it."""
    left = [1]  # items still to read at each open level, the outermost first
    at, end = 0, len(body)
    while left:
        if left[-1] == 0:
            left.pop()
            continue
        left[-1] -= 1
        if at >= end:
            return False
        first = body[at]
        at += 1
        count = 0
        if first <= 0x7F or first >= 0xE0:
            continue  # fixint
        if 0x80 <= first <= 0x8F:
            count = 2 * (first & 0x0F)
        elif 0x90 <= first <= 0x9F:
            count = first & 0x0F
        elif 0xA0 <= first <= 0xBF:
            at += first & 0x1F
            continue
        elif first in _FIXED:
            at += _FIXED[first]
            continue
        elif first in _SIZED:
            width, extra = _SIZED[first]
            at += width + extra + int.from_bytes(body[at : at + width], "big")
            continue
        elif first in _CONTAINERS:
            width, per = _CONTAINERS[first]
            count = per * int.from_bytes(body[at : at + width], "big")
            at += width
        else:
            return False  # 0xC1, never used: the decoder refuses it
        if count:
            if len(left) > limit:
                return True
            left.append(count)
    return False
