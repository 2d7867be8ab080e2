from collections.abc import Callable

def found_in(
    text: bytes,
    table: bytes,
    words: tuple[tuple[tuple[bytes, int], ...], ...],
    accept: Callable[[bytes, bytes, int], bool] | None,
    /,
) -> bool: ...
def quick(
    text: bytes,
    classes: bytes,
    table: bytes,
    words: tuple[tuple[tuple[bytes, int], ...], ...],
    reads: tuple[bytes, ...],
    changes: tuple[bytes, ...],
    defaults: tuple[bytes, ...],
    /,
) -> int: ...
def nul_at(data: bytes, start: int, /) -> int: ...
