from collections.abc import Callable

def found_in(
    text: bytes,
    table: bytes,
    words: tuple[tuple[tuple[bytes, int], ...], ...],
    accept: Callable[[bytes, bytes, int], bool] | None,
    /,
) -> bool: ...
