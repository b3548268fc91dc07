"""The login rate limit holds under parallel attempts: a flood of simultaneous logins checks at
most MAX_FAILED_LOGINS passwords, lets nobody in after the limit, and never runs argon2 for a
refused attempt; user names ignore case; ``gmsense users unlock`` lifts a lock."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gmsense.errors import InputError
from gmsense.review import auth
from gmsense.store import Store
from gmsense.testutils import run_cli

PASSWORD = "the-right-password-1"
PARALLEL = 40


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh SQLite store (file, write-ahead log) with one reviewer, ``rita``."""
    store = Store(str(tmp_path / "login.db"))
    auth.add_user(store, "rita", PASSWORD, "reviewer")
    return store


class Argon2Counter:
    """Stands in for the module's argon2 hasher: counts its computations (verifications and
    hashes) and the most that ran at the same time, and passes every call on to the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()
        self._real = auth._hasher
        monkeypatch.setattr(auth, "_hasher", self)

    def verify(self, password_hash: str, password: str) -> bool:
        return self._counted(self._real.verify, password_hash, password)

    def hash(self, password: str) -> str:
        return self._counted(self._real.hash, password)

    def check_needs_rehash(self, password_hash: str) -> bool:
        return self._real.check_needs_rehash(password_hash)

    def _counted(self, compute: Callable[..., Any], *args: str) -> Any:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return compute(*args)
        finally:
            with self._lock:
                self.running -= 1


def _parallel_logins(store: Store, attempts: list[tuple[str, str, str]]) -> Counter[str]:
    """Run every (user name, password, client) login at once (a barrier releases them
    together); count the outcomes: "ok", "wrong" or "throttled"."""
    barrier = threading.Barrier(len(attempts))

    def attempt(name: str, password: str, client: str) -> str:
        barrier.wait()
        try:
            auth.login(store, name, password, client)
        except auth.LoginRefusedError as refused:
            return "throttled" if refused.throttled else "wrong"
        return "ok"

    with ThreadPoolExecutor(len(attempts)) as pool:
        return Counter(pool.map(lambda args: attempt(*args), attempts))


def test_parallel_wrong_passwords_check_at_most_the_limit_and_then_nobody_gets_in(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    argon2 = Argon2Counter(monkeypatch)
    # Each attempt from its own address: only the per-user limit can stop them.
    outcomes = _parallel_logins(
        store, [("rita", f"guess-{i:02d}-wrong", f"10.0.0.{i}") for i in range(PARALLEL)]
    )
    assert outcomes == {
        "wrong": auth.MAX_FAILED_LOGINS,
        "throttled": PARALLEL - auth.MAX_FAILED_LOGINS,
    }
    assert argon2.calls == auth.MAX_FAILED_LOGINS
    assert argon2.most_at_once <= auth.ARGON2_CONCURRENCY
    with pytest.raises(auth.LoginRefusedError) as refused:
        auth.login(store, "rita", PASSWORD, "10.9.9.9")  # the right password, a fresh address
    assert refused.value.throttled
    assert argon2.calls == auth.MAX_FAILED_LOGINS  # a refused attempt runs no argon2


def test_the_database_alone_keeps_the_limit_as_for_separate_processes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the process-wide lock (as if every attempt came to another app process), SQLite's
    write lock still makes counting and recording one step."""
    monkeypatch.setattr(auth, "_reservation_lock", contextlib.nullcontext())
    argon2 = Argon2Counter(monkeypatch)
    outcomes = _parallel_logins(
        store, [("rita", f"guess-{i:02d}-wrong", f"10.0.1.{i}") for i in range(PARALLEL)]
    )
    assert outcomes == {
        "wrong": auth.MAX_FAILED_LOGINS,
        "throttled": PARALLEL - auth.MAX_FAILED_LOGINS,
    }
    assert argon2.calls == auth.MAX_FAILED_LOGINS


@pytest.mark.postgres
def test_parallel_logins_keep_the_limit_on_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, with and without the process-wide lock (the advisory lock then serialises)."""
    store = Store(postgres_url)
    auth.add_user(store, "rita", PASSWORD, "reviewer")
    argon2 = Argon2Counter(monkeypatch)
    outcomes = _parallel_logins(
        store, [("rita", f"guess-{i:02d}-wrong", f"10.0.2.{i}") for i in range(PARALLEL)]
    )
    assert outcomes == {
        "wrong": auth.MAX_FAILED_LOGINS,
        "throttled": PARALLEL - auth.MAX_FAILED_LOGINS,
    }
    monkeypatch.setattr(auth, "_reservation_lock", contextlib.nullcontext())
    outcomes = _parallel_logins(
        store, [("vera", "wrong-password-x", "10.0.3.1") for _ in range(PARALLEL)]
    )
    assert outcomes == {
        "wrong": auth.MAX_FAILED_LOGINS,
        "throttled": PARALLEL - auth.MAX_FAILED_LOGINS,
    }
    assert argon2.calls == 2 * auth.MAX_FAILED_LOGINS
    assert auth.unlock(store, "rita") == auth.MAX_FAILED_LOGINS
    assert auth.login(store, "RITA", PASSWORD, "10.0.2.99")[0]
    store.engine.dispose()


def test_parallel_right_and_wrong_passwords_never_exceed_the_failure_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(auth.MAX_FAILED_LOGINS - 1):
        with pytest.raises(auth.LoginRefusedError):
            auth.login(store, "rita", f"earlier-wrong-{i}", f"10.1.0.{i}")
    argon2 = Argon2Counter(monkeypatch)
    attempts = [
        (
            "RITA" if i % 2 else "rita",
            PASSWORD if i % 4 == 0 else f"guess-{i:02d}-wrong",
            f"10.2.0.{i}",
        )
        for i in range(PARALLEL)
    ]
    outcomes = _parallel_logins(store, attempts)
    # One failure was left: at most one more wrong password is checked (a right one frees its
    # slot again once it has logged in), and no refused attempt is checked at all.
    assert outcomes["wrong"] <= 1
    assert argon2.calls == outcomes["ok"] + outcomes["wrong"]
    assert outcomes["throttled"] == PARALLEL - argon2.calls > 0
    assert argon2.most_at_once <= auth.ARGON2_CONCURRENCY


def test_one_address_is_limited_across_user_names(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    argon2 = Argon2Counter(monkeypatch)
    outcomes = _parallel_logins(
        store, [(f"nobody{i}", "wrong-password-x", "10.3.0.1") for i in range(PARALLEL)]
    )
    assert outcomes == {
        "wrong": auth.MAX_FAILED_LOGINS,
        "throttled": PARALLEL - auth.MAX_FAILED_LOGINS,
    }
    assert (
        argon2.calls == auth.MAX_FAILED_LOGINS
    )  # unknown users cost one hash each, and only those


def test_a_right_password_below_the_limit_logs_in_and_is_not_a_failure(store: Store) -> None:
    for _ in range(3):
        token, _session = auth.login(store, "Rita", PASSWORD, "10.4.0.1")
        assert auth.session_user(store, token)[0].username == "rita"
    for i in range(auth.MAX_FAILED_LOGINS - 1):
        with pytest.raises(auth.LoginRefusedError):
            auth.login(store, "rita", f"wrong-{i}-wrong", "10.4.0.1")
    assert auth.login(store, "rita", PASSWORD, "10.4.0.1")[0]  # three successes did not count


def test_user_names_ignore_case(store: Store) -> None:
    with pytest.raises(InputError, match="exists already"):
        auth.add_user(store, "RITA", "another-password-1", "admin")
    admin = auth.add_user(store, "Admin1", "admin-password-1", "admin")
    assert admin.username == "admin1"
    with pytest.raises(InputError, match="exists already"):
        auth.add_user(store, "ADMIN1", "admin-password-2", "admin")
    assert [u.username for u in auth.list_users(store)] == ["admin1", "rita"]
    assert auth.get_user(store, "ADMIN1").id == admin.id
    assert auth.login(store, "aDmIn1", "admin-password-1", "10.5.0.1")[0]
    auth.set_active(store, "RITA", False)
    assert not auth.get_user(store, "rita").active


def test_case_variants_share_one_rate_limit(store: Store) -> None:
    for i in range(auth.MAX_FAILED_LOGINS):
        with pytest.raises(auth.LoginRefusedError):
            auth.login(store, "rita".upper() if i % 2 else "Rita", "wrong-wrong-1", f"10.6.0.{i}")
    with pytest.raises(auth.LoginRefusedError) as refused:
        auth.login(store, "rItA", PASSWORD, "10.6.1.1")
    assert refused.value.throttled


def test_users_unlock_lets_a_locked_out_user_in_again(store: Store) -> None:
    for i in range(auth.MAX_FAILED_LOGINS):
        with pytest.raises(auth.LoginRefusedError):
            auth.login(store, "rita", "wrong-wrong-1", f"10.7.0.{i}")
    with pytest.raises(auth.LoginRefusedError, match="too many"):
        auth.login(store, "rita", PASSWORD, "10.7.1.1")
    code, output = run_cli("users", "unlock", "RITA", "--db", store.url)
    assert code == 0, output
    assert "cleared 5 failed logins" in output
    assert auth.login(store, "rita", PASSWORD, "10.7.1.1")[0]


def test_users_unlock_can_clear_an_address_too(store: Store) -> None:
    for i in range(auth.MAX_FAILED_LOGINS):
        with pytest.raises(auth.LoginRefusedError):
            auth.login(store, f"someone{i}", "wrong-wrong-1", "10.8.0.1")
    with pytest.raises(auth.LoginRefusedError, match="too many"):
        auth.login(store, "rita", PASSWORD, "10.8.0.1")
    code, output = run_cli("users", "unlock", "rita", "--address", "10.8.0.1", "--db", store.url)
    assert code == 0, output
    assert auth.login(store, "rita", PASSWORD, "10.8.0.1")[0]


def test_users_unlock_of_an_unknown_user_is_a_clear_error(store: Store) -> None:
    code, output = run_cli("users", "unlock", "nobody", "--db", store.url)
    assert code == 2
    assert "no user 'nobody'" in output
