"""The console's notes-document cache: least recently used out first, within its bytes."""

from __future__ import annotations

from services.console.notes import ArchivedBody, NotesCache


def _body(name: str) -> ArchivedBody:
    return ArchivedBody(task_id=f"task-{name}", body_sha256=name * 64, body=b"{}")


class TestNotesCache:
    def test_the_least_recently_used_goes_first(self) -> None:
        """Past the budget the document read longest ago is dropped, not the oldest put."""
        cache = NotesCache(budget=30)
        a, b, c = _body("a"), _body("b"), _body("c")
        cache.put(a, b"a" * 10)
        cache.put(b, b"b" * 10)
        assert cache.get(a) == b"a" * 10  # a is now the most recently used
        cache.put(c, b"c" * 15)
        assert cache.get(b) is None
        assert cache.get(a) == b"a" * 10
        assert cache.get(c) == b"c" * 15

    def test_a_document_over_the_budget_is_not_kept(self) -> None:
        """One huge document does not flush every other one out."""
        cache = NotesCache(budget=30)
        a = _body("a")
        cache.put(a, b"a" * 10)
        cache.put(_body("b"), b"b" * 31)
        assert cache.get(_body("b")) is None
        assert cache.get(a) == b"a" * 10

    def test_putting_again_counts_the_bytes_once(self) -> None:
        """A document made twice (two views at once) replaces itself, not its neighbours."""
        cache = NotesCache(budget=30)
        a, b = _body("a"), _body("b")
        cache.put(a, b"a" * 10)
        cache.put(b, b"b" * 10)
        cache.put(b, b"b" * 10)
        cache.put(b, b"b" * 10)
        assert cache.get(a) == b"a" * 10

    def test_a_zero_budget_keeps_nothing(self) -> None:
        cache = NotesCache(budget=0)
        cache.put(_body("a"), b"x")
        assert cache.get(_body("a")) is None
