"""Fair share between owner services: a backlog of one owner does not hold back another's new
work by its length, weights give an owner more of the fleet, a cap bounds what an owner runs
fleet-wide, and the claim stays a claim (no job to two workers) with many owners at once."""

from __future__ import annotations

import threading
from collections import Counter, deque

from sqlalchemy import text

from ai_service.rows import JobRow
from ai_service.service import JobService
from ai_service.sql import claim_statement
from ai_service.store.jobs import JobRepository
from ai_service.store.owners import OwnerRepository
from tests.integration.helpers import expire_lease, lease_of, new_job

SLOTS = 16  # the worker's default number of slots


def completions_until_done(service: JobService, owner: str, jobs: int,
                           give_up_after: int = 200) -> list[str]:
    """The owner of each job one worker with SLOTS slots completes, in order, until `owner`'s
    `jobs` are all done (or give_up_after completions): it fills its slots, then finishes the
    longest-running job and claims one job for the freed slot, over and over."""
    running: deque[JobRow] = deque(service.claim_jobs("w", SLOTS, lease_seconds=600))
    done: list[str] = []
    while running and Counter(done)[owner] < jobs and len(done) < give_up_after:
        job = running.popleft()
        service.complete_jobs("w", [(lease_of(job), {"ok": True})])
        done.append(job.owner_service)
        running.extend(service.claim_jobs("w", 1, lease_seconds=600))
    return done


def backlog_then_live_work(repo: JobRepository) -> None:
    """monitoring-pf's 2,000 jobs, then telephony's 20 (later, so older loses no tie)."""
    repo.create_jobs([new_job(owner_service="monitoring-pf", owner_ref=f"m/{i}")
                      for i in range(2000)])
    repo.create_jobs([new_job(owner_service="telephony", owner_ref=f"t/{i}")
                      for i in range(20)])


def test_a_backlog_of_one_owner_delays_another_owners_jobs_by_their_share_not_its_length(
    repo: JobRepository,
) -> None:
    """Equal weights: the first claim gives each owner 8 of the 16 slots, and every freed slot
    goes back to the owner that freed it (it is then the one with fewer running), so the
    completions come in runs of 8 per owner, monitoring's first (its jobs are older):
    telephony's 20th is the 4th of its third run, completion 8 + 8 + 8 + 8 + 8 + 4 = 44."""
    backlog_then_live_work(repo)
    done = completions_until_done(JobService(repo), "telephony", 20)
    assert Counter(done)["telephony"] == 20
    assert len(done) <= 44


def test_a_heavier_owner_gets_its_weight_in_slots(repo: JobRepository) -> None:
    """telephony at weight 4: its k-th job scores k/4 against monitoring's k, so the first
    claim gives it 13 of the 16 slots (scores up to 3.25) and monitoring 3, and again every
    freed slot returns to its owner: runs of 3 and 13, telephony's 20th is the 7th of its
    second run, completion 3 + 13 + 3 + 7 = 26."""
    OwnerRepository(repo).set_owner("telephony", weight=4)
    backlog_then_live_work(repo)
    done = completions_until_done(JobService(repo), "telephony", 20)
    assert Counter(done)["telephony"] == 20
    assert len(done) <= 26


def test_a_lone_owner_still_fills_every_slot(repo: JobRepository) -> None:
    repo.create_jobs([new_job(owner_ref=f"r/{i}") for i in range(40)])
    assert len(repo.claim_jobs("w", SLOTS, lease_seconds=60)) == SLOTS


def test_a_short_owner_leaves_its_unused_share_to_the_others(repo: JobRepository) -> None:
    repo.create_jobs([new_job(owner_service="monitoring-pf", owner_ref=f"m/{i}")
                      for i in range(30)])
    repo.create_jobs([new_job(owner_service="telephony", owner_ref="t/0")])
    claimed = repo.claim_jobs("w", 10, lease_seconds=60)
    assert Counter(j.owner_service for j in claimed) == {"monitoring-pf": 9, "telephony": 1}


def test_priority_orders_jobs_within_an_owner_not_across_owners(repo: JobRepository) -> None:
    repo.create_jobs([new_job(owner_service="a", owner_ref=f"a/{i}", priority=50)
                      for i in range(4)])
    repo.create_jobs([new_job(owner_service="b", owner_ref="b/low"),
                      new_job(owner_service="b", owner_ref="b/high", priority=9)])
    claimed = repo.claim_jobs("w", 2, lease_seconds=60)
    assert Counter(j.owner_service for j in claimed) == {"a": 1, "b": 1}
    assert "b/high" in {j.owner_ref for j in claimed}


def test_an_owners_cap_holds_across_concurrent_claimers(repo: JobRepository) -> None:
    OwnerRepository(repo).set_owner("monitoring-pf", max_running=3)
    repo.create_jobs([new_job(owner_service="monitoring-pf", owner_ref=f"m/{i}")
                      for i in range(20)])
    repo.create_jobs([new_job(owner_service="telephony", owner_ref=f"t/{i}") for i in range(5)])
    got: list[JobRow] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        for _ in range(5):
            rows = repo.claim_jobs(f"w{n}", 2, lease_seconds=60)
            with lock:
                got.extend(rows)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Counter(r.owner_service for r in got) == {"monitoring-pf": 3, "telephony": 5}


def test_a_capped_owner_gets_a_slot_back_when_its_job_finishes(repo: JobRepository) -> None:
    OwnerRepository(repo).set_owner("telephony", max_running=1)
    repo.create_jobs([new_job(owner_ref=f"t/{i}") for i in range(3)])
    [first] = repo.claim_jobs("w", 5, lease_seconds=60)
    assert repo.claim_jobs("w", 5, lease_seconds=60) == []
    repo.complete_job(lease_of(first), {"ok": True})
    assert len(repo.claim_jobs("w", 5, lease_seconds=60)) == 1


def test_a_reclaimed_lease_counts_against_its_owners_cap(repo: JobRepository) -> None:
    OwnerRepository(repo).set_owner("telephony", max_running=1)
    repo.create_jobs([new_job(owner_ref=f"t/{i}") for i in range(2)])
    [crashed] = repo.claim_jobs("w1", 5, lease_seconds=60)
    expire_lease(repo, crashed.id)
    assert [j.id for j in repo.claim_jobs("w2", 5, lease_seconds=60)] == [crashed.id]


def test_a_cap_set_in_another_process_holds_before_that_process_reads_it_again(
    repo: JobRepository, settings: object,
) -> None:
    """This repository read the capped owners (none) before the cap was set elsewhere: its
    next claims leave the capped owner's jobs alone until it reads them again."""
    from ai_service.composition import make_repository
    repo.create_jobs([new_job(owner_ref=f"t/{i}") for i in range(3)])
    assert repo.capped_owners() == []
    other = make_repository(settings, "elsewhere")  # type: ignore[arg-type]
    try:
        OwnerRepository(other).set_owner("telephony", max_running=1)
    finally:
        other.engine.dispose()
    assert repo.claim_jobs("w", 5, lease_seconds=60) == []
    repo.forget_capped_owners()
    assert len(repo.claim_jobs("w", 5, lease_seconds=60)) == 1


def test_many_owners_and_concurrent_claimers_never_share_a_job(repo: JobRepository) -> None:
    total = 1500
    repo.create_jobs([new_job(owner_service=f"owner-{i % 30}", owner_ref=f"r/{i}")
                      for i in range(total)])
    OwnerRepository(repo).set_owner("owner-7", weight=5)
    claimed: list[object] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            while rows := repo.claim_jobs(f"w{n}", 1 + n * 4, lease_seconds=60):
                with lock:
                    claimed.extend(r.id for r in rows)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert [j for j, n in Counter(claimed).items() if n > 1] == []
    assert len(claimed) == total


def test_the_fair_claim_walks_the_owners_index_and_never_scans_the_pending_jobs(
    repo: JobRepository,
) -> None:
    """With sequential scans priced out, the claim finds each owner's best job through
    ix_jobs_owner_claimable (one probe per owner), never by reading every pending job."""
    repo.create_jobs([new_job(owner_service=f"owner-{i % 5}", owner_ref=f"r/{i}")
                      for i in range(200)])
    with repo.engine.begin() as conn:
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(
            text(f"EXPLAIN {claim_statement(16, capped=False)}"),
            {"worker_id": "w", "lease_seconds": 60, "task_types": None, "profiles": None}))
    assert "ix_jobs_owner_claimable" in plan, plan
    assert "Seq Scan on jobs" not in plan, plan
