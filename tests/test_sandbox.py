"""The container lifecycle of one job, against the real Docker daemon."""

from __future__ import annotations

import resource
import socket

import httpx
import msgspec
import pytest
import trio

from dsw.config import MiB, Settings
from dsw.container_spec import pid_namespace
from dsw.docker import DockerClient
from dsw.errors import InvalidJobId
from dsw.messages import FinishedWith
from dsw.reaper import remove_own
from dsw.sandbox import ScriptOutcome, run_script
from tests.conftest import TEST_SCRIPTS, configure
from tests.proxies import RestartingDaemon, is_delete, open_docker_via
from tests.sandbox_runs import request_for, run


async def test_shell_hello_world(docker: DockerClient, settings: Settings) -> None:
    script = (TEST_SCRIPTS / "hello-world.sh").read_text()
    outcome = await run(docker, settings, script)
    assert outcome.finished_with is FinishedWith.SUCCEEDED
    assert outcome.stdout == "Hello from script\n"
    assert outcome.stderr == ""
    assert outcome.exit_code == 0


async def test_mono_hello_world(docker: DockerClient, settings: Settings) -> None:
    script = (TEST_SCRIPTS / "hello-world.csx").read_text()
    outcome = await run(docker, settings, script, sandbox="linux-amd64-mono")
    assert outcome.finished_with is FinishedWith.SUCCEEDED, outcome.stderr
    assert outcome.stdout == "Hello from script\n"


async def test_mono_compile_error(docker: DockerClient, settings: Settings) -> None:
    script = 'Console.WriteLine("ok");\nint x = "not a number";\n'
    outcome = await run(docker, settings, script, sandbox="linux-amd64-mono")
    assert outcome.finished_with is FinishedWith.FAILED
    assert outcome.exit_code == 1
    assert "main.csx(2," in outcome.stderr
    assert "error CS0029" in outcome.stderr


async def test_mono_unhandled_exception(docker: DockerClient, settings: Settings) -> None:
    script = 'Console.WriteLine("before");\nthrow new InvalidOperationException("boom");\n'
    outcome = await run(docker, settings, script, sandbox="linux-amd64-mono")
    assert outcome.finished_with is FinishedWith.FAILED
    assert outcome.stdout == "before\n"
    assert "System.InvalidOperationException: boom" in outcome.stderr


async def test_non_zero_exit(docker: DockerClient, settings: Settings) -> None:
    outcome = await run(docker, settings, "echo out; echo err >&2; exit 3\n")
    assert outcome.finished_with is FinishedWith.FAILED
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (3, "out\n", "err\n")


@pytest.mark.parametrize("sandbox", ["linux-amd64-shell", "linux-amd64-mono"])
async def test_reading_stdin(docker: DockerClient, settings: Settings, sandbox: str) -> None:
    suffix = "csx" if sandbox.endswith("mono") else "sh"
    script = (TEST_SCRIPTS / f"read-stdin.{suffix}").read_text()
    given = await run(docker, settings, script, sandbox=sandbox, stdin="first line\nsecond\n")
    assert given.finished_with is FinishedWith.SUCCEEDED, given.stderr
    assert "first line" in given.stdout
    assert "second" in given.stdout
    empty = await run(docker, settings, script, sandbox=sandbox)
    assert empty.finished_with is FinishedWith.SUCCEEDED, empty.stderr
    assert "first line" not in empty.stdout


async def test_timeout_of_a_sleeping_script(docker: DockerClient, settings: Settings) -> None:
    started = trio.current_time()
    outcome = await run(docker, settings, "echo started; sleep 300\n", timeout_s=2)
    elapsed = trio.current_time() - started
    assert outcome.finished_with is FinishedWith.TIME_LIMIT_EXCEEDED
    assert outcome.stdout == "started\n"
    assert outcome.note == "dsw: the script passed its 2 s time limit and was stopped\n"
    assert elapsed < 2 + settings.stop_grace_s + 10


async def test_timeout_of_a_script_ignoring_sigterm(
    docker: DockerClient, settings: Settings
) -> None:
    script = "trap '' TERM; echo stubborn; while :; do sleep 1; done\n"
    started = trio.current_time()
    outcome = await run(docker, settings, script, timeout_s=2)
    elapsed = trio.current_time() - started
    assert outcome.finished_with is FinishedWith.TIME_LIMIT_EXCEEDED
    assert outcome.stdout == "stubborn\n"
    assert outcome.exit_code == 137  # SIGKILL after the grace
    assert elapsed < 2 + settings.stop_grace_s + 10


async def test_output_flood_is_capped(docker: DockerClient, settings: Settings) -> None:
    settings = configure(settings, output_limit_bytes=64 * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = await run(docker, settings, "yes flood\n")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert outcome.finished_with is FinishedWith.FAILED
    assert outcome.output_limit_exceeded
    assert outcome.stdout_truncated
    assert not outcome.stderr_truncated
    assert len(outcome.stdout.encode()) == 64 * 1024
    assert outcome.stdout.startswith("flood\nflood\n")
    assert outcome.note == "dsw: stdout passed the 64 KiB output limit; the script was stopped\n"
    assert after - before < 100 * 1024  # KiB: the flood never sat in the worker's memory


async def test_one_huge_line_is_capped(docker: DockerClient, settings: Settings) -> None:
    settings = configure(settings, output_limit_bytes=256 * 1024)
    outcome = await run(docker, settings, "head -c 100000000 /dev/zero | tr '\\0' x >&2\n")
    assert outcome.finished_with is FinishedWith.FAILED
    assert outcome.output_limit_exceeded
    assert outcome.stderr_truncated
    assert outcome.stderr == "x" * (256 * 1024)
    assert outcome.note.startswith("dsw: stderr passed the 256 KiB output limit")


async def test_invalid_utf8_and_nul_bytes(docker: DockerClient, settings: Settings) -> None:
    outcome = await run(docker, settings, "printf 'a\\377b\\000c\\303\\251\\n'\n")
    assert outcome.finished_with is FinishedWith.SUCCEEDED
    assert outcome.stdout == "a\ufffdb\x00c\u00e9\n"


async def test_fork_bomb_is_contained(docker: DockerClient, settings: Settings) -> None:
    script = "bomb() { bomb | bomb & }; bomb; sleep 3; echo survived\n"
    outcome = await run(docker, settings, script, timeout_s=10)
    assert outcome.finished_with in (
        FinishedWith.SUCCEEDED,
        FinishedWith.FAILED,
        FinishedWith.TIME_LIMIT_EXCEEDED,
    )
    assert "fork" in outcome.stderr.lower() or "resource" in outcome.stderr.lower()
    # The host still starts processes and containers.
    after = await run(docker, settings, "echo fine\n")
    assert after.stdout == "fine\n"


async def test_memory_bomb_is_oom_killed(docker: DockerClient, settings: Settings) -> None:
    outcome = await run(docker, settings, "tail /dev/zero\n", memory_bytes=64 * MiB, timeout_s=60)
    assert outcome.finished_with is FinishedWith.FAILED
    assert outcome.oom_killed
    assert outcome.exit_code == 137
    assert (
        outcome.note == "dsw: the script ran out of memory (limit 64 MiB); the kernel killed it\n"
    )
    # The cgroup's own high-water mark, not a sample: the bomb reached the limit.
    assert outcome.peak_memory_bytes is not None
    assert 60 * MiB <= outcome.peak_memory_bytes <= 64 * MiB


async def test_peak_memory_of_every_job_is_the_cgroup_s_high_water_mark(
    docker: DockerClient, settings: Settings
) -> None:
    short = await run(docker, settings, "echo quick\n")
    assert short.peak_memory_bytes is not None  # even a job of milliseconds has one
    assert short.stderr == ""  # dsw-entry's report never reaches the job's output
    # 40 MiB in the tmpfs (memory) for a moment, then gone: the peak remembers it.
    burst = "head -c 41943040 /dev/zero > /tmp/big && rm /tmp/big && echo done\n"
    outcome = await run(docker, settings, burst)
    assert outcome.stdout == "done\n"
    assert outcome.peak_memory_bytes is not None
    assert outcome.peak_memory_bytes >= 40 * MiB
    # Stopped at its limit while ignoring SIGTERM (no report): the daemon's sample before.
    stubborn = "trap '' TERM; head -c 20971520 /dev/zero > /tmp/big; sleep 300\n"
    stopped = await run(docker, settings, stubborn, timeout_s=2)
    assert stopped.finished_with is FinishedWith.TIME_LIMIT_EXCEEDED
    assert stopped.peak_memory_bytes is not None
    assert stopped.peak_memory_bytes >= 20 * MiB


async def test_a_script_that_ended_before_its_limit_is_not_reported_over_it(
    docker: DockerClient, settings: Settings
) -> None:
    # The deadline races the script's own exit. An exit the script made before the stop came
    # (the daemon says it had stopped; or dsw-entry saw the stop only after the script's end) is
    # reported by its exit code. Only a stop that lands between the shell's fork and the
    # script's start (microseconds) can still give TIME_LIMIT_EXCEEDED with the script's code.
    by_exit_code = 0
    for script in ("exit 0\n", "exit 3\n") * 3:
        outcome = await run(docker, settings, script, timeout_s=1e-9)
        if outcome.finished_with is FinishedWith.TIME_LIMIT_EXCEEDED:
            assert outcome.exit_code in (0, 3, 137, 143)
        else:
            by_exit_code += 1
            assert outcome.exit_code == int(script.split()[1])
            assert outcome.note == ""
    assert by_exit_code >= 1


async def test_dev_shm_is_sized_and_counted_as_memory(
    docker: DockerClient, settings: Settings
) -> None:
    outcome = await run(docker, settings, "df -k /dev/shm | tail -1\n")
    assert outcome.stdout.split()[1] == str(settings.shm_bytes // 1024)
    small = configure(settings, shm_bytes=8 * MiB)
    full = await run(docker, small, "head -c 16777216 /dev/zero > /dev/shm/x; echo $?\n")
    assert full.stdout == "1\n"
    assert "No space left on device" in full.stderr
    # What /dev/shm holds is the container's memory: the cgroup's high-water mark counts it...
    burst = "head -c 41943040 /dev/zero > /dev/shm/x && rm /dev/shm/x && echo done\n"
    held = await run(docker, settings, burst)
    assert held.stdout == "done\n"
    assert held.peak_memory_bytes is not None
    assert held.peak_memory_bytes >= 40 * MiB
    # ...and the memory limit, not the size of /dev/shm, stops a script that fills it.
    roomy = configure(settings, shm_bytes=128 * MiB)
    # The OOM killer picks head or a shell: either way the script fails.
    fill = "head -c 100663296 /dev/zero > /dev/shm/x || exit 1\n"
    over = await run(docker, roomy, fill, memory_bytes=64 * MiB, timeout_s=60)
    assert over.oom_killed
    assert over.finished_with is FinishedWith.FAILED
    assert "No space left on device" not in over.stderr


async def test_no_network_in_a_none_sandbox(docker: DockerClient, settings: Settings) -> None:
    script = (
        "ls /sys/class/net\n"
        "if bash -c 'echo > /dev/tcp/1.1.1.1/80' 2>/dev/null; then echo connected; "
        "else echo unreachable; fi\n"
    )
    outcome = await run(docker, settings, script)
    assert outcome.stdout == "lo\nunreachable\n"


async def test_root_is_read_only_and_nothing_persists(
    docker: DockerClient, settings: Settings
) -> None:
    first = await run(
        docker,
        settings,
        'touch /evil 2>/dev/null && echo root-writable; touch /tmp/x "$HOME/y" && echo tmp-ok\n',
    )
    assert first.stdout == "tmp-ok\n"
    second = await run(docker, settings, 'ls /tmp "$HOME"; test -e /evil && echo persisted\n')
    assert "x" not in second.stdout.split()
    assert "y" not in second.stdout.split()
    assert "persisted" not in second.stdout


async def test_sandbox_user_has_no_privileges(docker: DockerClient, settings: Settings) -> None:
    outcome = await run(
        docker, settings, "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status\n"
    )
    assert outcome.stdout.split() == ["10001", "CapEff:", "0000000000000000", "NoNewPrivs:", "1"]


async def test_cancellation_from_outside_removes_the_container(
    docker: DockerClient, settings: Settings
) -> None:
    request = request_for(settings, "echo running; sleep 300\n", timeout_s=600)
    name = f"sandbox-job-{request.job_id}"
    with trio.CancelScope() as scope:

        def started() -> None:
            scope.deadline = trio.current_time() + 1

        await run_script(docker, settings, request, on_started=started)
    assert scope.cancelled_caught
    assert await docker.containers_list(name=f"^/{name}$") == []


async def test_twenty_concurrent_jobs(docker: DockerClient, settings: Settings) -> None:
    outcomes: list[ScriptOutcome] = []

    async def one(n: int) -> None:
        outcomes.append(await run(docker, settings, f"echo job {n}\n"))

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(one, n)
    assert sorted(o.stdout for o in outcomes) == sorted(f"job {n}\n" for n in range(20))
    assert all(o.finished_with is FinishedWith.SUCCEEDED for o in outcomes)


@pytest.mark.parametrize(
    "job_id",
    [
        "../../containers/x",
        "x" * 36,
        "7f000001-863c-17b2-8186-3cdeb62e0000/",
        "7f000001-863c-17b2-8186-3cdeb62e0000\n",
        "",
        None,
    ],
)
async def test_hostile_job_id_is_refused_before_any_docker_call(
    settings: Settings, job_id: str
) -> None:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    request = msgspec.structs.replace(request_for(settings, "echo hi\n"), job_id=job_id)
    async with httpx.AsyncClient(
        base_url="http://docker", transport=httpx.MockTransport(record)
    ) as http:
        with pytest.raises(InvalidJobId):
            await run_script(DockerClient(http, 1.0), settings, request)
    assert calls == []


async def test_another_worker_s_run_of_the_same_job_is_waited_for_not_killed(
    docker: DockerClient, settings: Settings
) -> None:
    request = request_for(settings, "echo second\n")
    name = f"sandbox-job-{request.job_id}"
    other = {
        "Image": "dsw-sandbox:linux-amd64-shell",
        "Entrypoint": ["sleep"],
        "Cmd": ["60"],
        "Labels": {"dsw.project": "dsw", "dsw.worker": settings.worker_id + "-other"},
    }
    existing, _ = await docker.container_create(name, other)
    await docker.container_start(existing)
    outcomes: list[ScriptOutcome] = []
    async with trio.open_nursery() as nursery:

        async def second_run() -> None:
            outcomes.append(await run_script(docker, settings, request))

        nursery.start_soon(second_run)
        await trio.sleep(1.5)
        assert (await docker.container_inspect(existing))["State"]["Running"]  # left alone
        await docker.container_remove(existing)  # the other run ends
    assert outcomes[0].stdout == "second\n"


@pytest.mark.parametrize(
    ("state", "command"),
    [
        ("running", "sleep 60"),
        ("created", ""),  # between the Java worker's create and its start
        ("exited", "exit 0"),  # just ended: the Java worker may still be reading its output
    ],
)
async def test_another_system_s_run_of_the_same_job_is_waited_for_not_touched(
    docker: DockerClient, settings: Settings, state: str, command: str
) -> None:
    # The original Java worker on the same daemon: the same container name, no labels at all.
    request = request_for(settings, "echo after java\n")
    java = {"Image": "dsw-sandbox:linux-amd64-shell", "Entrypoint": ["sh", "-c", command]}
    existing, _ = await docker.container_create(f"sandbox-job-{request.job_id}", java)
    if command:
        await docker.container_start(existing)
    if state == "exited":
        await docker.container_wait(existing)
    outcomes: list[ScriptOutcome] = []
    try:
        async with trio.open_nursery() as nursery:

            async def second_run() -> None:
                outcomes.append(await run_script(docker, settings, request))

            nursery.start_soon(second_run)
            await trio.sleep(1.5)
            assert (await docker.container_inspect(existing))["State"]["Status"] == state
            await docker.container_remove(existing)  # the Java worker's run ends
    finally:
        with trio.move_on_after(15, shield=True):
            await docker.container_remove(existing)
    assert outcomes[0].stdout == "after java\n"


async def test_a_leftover_of_the_same_job_is_replaced(
    docker: DockerClient, settings: Settings
) -> None:
    request = request_for(settings, "echo fresh\n")
    leftover = {
        "Image": "dsw-sandbox:linux-amd64-shell",
        "Labels": {"dsw.worker": settings.worker_id},
    }
    await docker.container_create(f"sandbox-job-{request.job_id}", leftover)
    outcome = await run_script(docker, settings, request)
    assert outcome.stdout == "fresh\n"


async def test_an_orphan_of_a_dead_worker_is_replaced_not_waited_for(
    docker: DockerClient, settings: Settings
) -> None:
    gone = await trio.lowlevel.open_process(["true"])
    await gone.wait()
    request = request_for(settings, "echo after the orphan\n")
    labels = {
        "dsw.project": "dsw",
        "dsw.worker": settings.worker_id + "-dead",
        "dsw.worker.host": socket.gethostname(),
        "dsw.worker.pid": str(gone.pid),
        "dsw.worker.pidns": pid_namespace(),
    }
    orphan = {
        "Image": "dsw-sandbox:linux-amd64-shell",
        "Entrypoint": ["sleep"],
        "Cmd": ["60"],
        "Labels": labels,
    }
    existing, _ = await docker.container_create(f"sandbox-job-{request.job_id}", orphan)
    await docker.container_start(existing)
    with trio.fail_after(60):  # far below the wait for a live worker's run
        outcome = await run_script(docker, settings, request)
    assert outcome.stdout == "after the orphan\n"


async def test_a_removal_answered_500_while_the_daemon_restarts_is_asked_again(
    docker: DockerClient, settings: Settings
) -> None:
    def daemon(inner: httpx.AsyncBaseTransport) -> RestartingDaemon:
        return RestartingDaemon(inner, is_delete, refusals=2)

    request = request_for(settings, "echo hi\n")
    async with open_docker_via(settings, daemon) as (restarting_docker, restarting):
        outcome = await run_script(restarting_docker, settings, request)
    assert outcome.stdout == "hi\n"
    assert [r.split("/")[-2] for r in restarting.answered_500] == ["containers", "containers"]
    # Removed by the job itself, not left to the reaper.
    assert await docker.containers_list(name=f"^/sandbox-job-{request.job_id}$") == []


async def test_a_leftover_the_daemon_cannot_remove_is_put_aside_for_the_reaper(
    docker: DockerClient, settings: Settings
) -> None:
    # After a restart the daemon may refuse a removal for a while ("device or resource busy").
    request = request_for(settings, "echo past it\n")
    leftover = {
        "Image": "dsw-sandbox:linux-amd64-shell",
        "Labels": {"dsw.project": "dsw", "dsw.worker": settings.worker_id},
    }
    await docker.container_create(f"sandbox-job-{request.job_id}", leftover)

    def daemon(inner: httpx.AsyncBaseTransport) -> RestartingDaemon:
        return RestartingDaemon(inner, is_delete, refusals=1)

    async with open_docker_via(settings, daemon) as (refusing_docker, refusing):
        outcome = await run_script(refusing_docker, settings, request)
    assert outcome.stdout == "past it\n"
    assert len(refusing.answered_500) == 1
    aside = await docker.containers_list(name=f"^/sandbox-job-{request.job_id}-aside-")
    assert [c["Labels"]["dsw.worker"] for c in aside] == [settings.worker_id]
    assert await remove_own(docker, settings) == 1  # what a worker does at its end
