"""The create body of a job's container: which daemon warnings refuse it."""

from dsw.container_spec import unenforced


def test_only_blkio_warnings_are_tolerated() -> None:
    blkio = (
        "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
        "Weight discarded."
    )
    swap = "Your kernel does not support swap limit capabilities or the cgroup is not mounted."
    assert unenforced([blkio]) == []
    assert unenforced([blkio, swap]) == [swap]
