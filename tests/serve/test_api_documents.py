"""Documents and jobs over HTTP: upload, list, get, delete, re-index the corpus, cancel jobs."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from retrieval.indexer import Indexer, IngestReport, IngestRoot
from serve.jobs import JobContext
from tests.serve.conftest import Server, ServerFactory

NOTE = b"# Ferry\n\nThe Vantablue ferry leaves the north quay at seven every morning."


def upload(server: Server, *files: tuple[str, bytes]) -> Any:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return server.client.post("/v1/documents", files=parts)


def uploaded(server: Server, name: str = "ferry.md", data: bytes = NOTE) -> dict:
    res = upload(server, (name, data))
    assert res.status_code == 202, res.text
    job = res.json()
    assert job["object"] == "job" and job["kind"] == "ingest" and job["params"] == {"files": [name]}
    done = server.wait_job(job["id"])
    assert done["state"] == "succeeded", done
    return done


def doc_ids(server: Server, **params: Any) -> list[str]:
    res = server.client.get("/v1/documents", params=params)
    assert res.status_code == 200, res.text
    return [d["id"] for d in res.json()["data"]]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_upload_is_indexed_listed_and_cited_without_restart(server: Server) -> None:
    before = server.index_version
    # No document mentions Vantablue yet: the answer says so, without the model.
    before_upload = server.chat("Vantablue ferry?").json()
    assert before_upload["sources"] == []
    assert before_upload["ragtune"]["unknown_terms"] == ["vantablue", "ferry"]
    done = uploaded(server)
    result = done["result"]
    assert result["documents"]["added"] == 1 and result["index_version"] > before
    assert done["progress"]["files_done"] == 1
    assert "uploads/ferry.md" in doc_ids(server)
    assert doc_ids(server, prefix="uploads/") == ["uploads/ferry.md"]
    doc = server.client.get("/v1/documents/uploads/ferry.md").json()
    assert doc["object"] == "document" and doc["id"] == "uploads/ferry.md"
    assert doc["index_version"] == result["index_version"]
    assert any("Vantablue" in c["text"] for c in doc["chunk_list"])
    body = server.chat("When does the Vantablue ferry leave?").json()
    assert body["sources"][0]["document_id"] == "uploads/ferry.md"
    assert body["ragtune"]["index_version"] == result["index_version"]
    assert (server.settings.uploads_dir / "ferry.md").read_bytes() == NOTE


def test_uploading_the_same_file_again_changes_nothing(server: Server) -> None:
    uploaded(server)
    again = uploaded(server)["result"]["documents"]
    assert again["added"] == 0 and again["unchanged"] == 1
    changed = uploaded(server, data=NOTE + b" It returns at nine.")["result"]["documents"]
    assert changed["changed"] == 1


@pytest.mark.promise(8)
@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../x.txt", "invalid_filename"),
        ("a/b.txt", "invalid_filename"),
        ("..\\x.txt", "invalid_filename"),
        (".hidden.txt", "invalid_filename"),
        ("/x.txt", "invalid_filename"),
        ("../../../../tmp/x.txt", "invalid_filename"),
        ("", "invalid_request"),  # no file name: not a file part at all
    ],
)
def test_names_with_a_path_are_refused_and_nothing_is_written(
    server: Server, name: str, code: str
) -> None:
    root = server.settings.data_dir.parent
    before = files_under(root)
    res = upload(server, (name, b"escape attempt"), ("fine.txt", b"a good file beside it"))
    assert res.status_code == 400, res.text
    assert res.json()["error"]["code"] == code
    assert files_under(root) == before
    assert not server.settings.uploads_dir.exists()
    assert not (root.parent / "x.txt").exists()
    assert server.client.get("/v1/jobs").json()["data"] == []  # no job was started


@pytest.mark.parametrize("name", ["run.exe", "report.docx", "noext"])
def test_unsupported_types_are_415(server: Server, name: str) -> None:
    res = upload(server, (name, b"data"))
    assert res.status_code == 415 and res.json()["error"]["code"] == "unsupported_type"


def test_oversized_upload_is_413(make_server: ServerFactory) -> None:
    server = make_server(ingest={"max_file_bytes": 200})
    res = upload(server, ("big.txt", b"x" * 201))
    assert res.status_code == 413 and res.json()["error"]["code"] == "file_too_large"
    assert upload(server, ("small.txt", b"fits in two hundred bytes")).status_code == 202
    # Far over the limit: refused by its Content-Length before the body is read.
    res = upload(server, ("huge.txt", b"x" * 100_000))
    assert res.status_code == 413 and res.json()["error"]["code"] == "body_too_large"


def test_upload_needs_files_and_distinct_names(server: Server) -> None:
    assert server.client.post("/v1/documents").status_code == 400
    res = upload(server, ("a.txt", b"one"), ("a.txt", b"two"))
    assert res.status_code == 400 and "same name" in res.json()["error"]["message"]


def test_delete_removes_the_upload_and_reindex_does_not_bring_it_back(server: Server) -> None:
    uploaded(server)
    res = server.client.delete("/v1/documents/uploads/ferry.md")
    assert res.status_code == 200 and res.json()["documents"]["removed"] == 1
    assert server.client.get("/v1/documents/uploads/ferry.md").status_code == 404
    assert not (server.settings.uploads_dir / "ferry.md").exists()
    server.reindex()
    assert "uploads/ferry.md" not in doc_ids(server)
    gone = server.chat("Vantablue ferry?").json()
    assert gone["sources"] == [] and gone["ragtune"]["unknown_terms"] == ["vantablue", "ferry"]
    res = server.client.delete("/v1/documents/uploads/ferry.md")
    assert res.status_code == 404 and res.json()["error"]["code"] == "document_not_found"


def test_delete_removes_the_file_before_the_document(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between the two steps leaves a document without its file, never a file without
    its document (which a re-index would bring back after the DELETE)."""
    uploaded(server)
    path = server.settings.uploads_dir / "ferry.md"
    file_there_at_index_write = []
    real = Indexer.delete

    def spy(self: Indexer, doc_ids: Sequence[str]) -> IngestReport:
        file_there_at_index_write.append(path.exists())
        return real(self, doc_ids)

    monkeypatch.setattr(Indexer, "delete", spy)
    assert server.client.delete("/v1/documents/uploads/ferry.md").status_code == 200
    assert file_there_at_index_write == [False]


def test_a_delete_cut_short_after_the_file_is_finished_by_a_retry(server: Server) -> None:
    uploaded(server)
    (server.settings.uploads_dir / "ferry.md").unlink()  # what a kill between the steps leaves
    res = server.client.delete("/v1/documents/uploads/ferry.md")  # the client's retry
    assert res.status_code == 200, res.text
    assert res.json()["documents"]["removed"] == 1
    assert "uploads/ferry.md" not in doc_ids(server)
    res = server.client.delete("/v1/documents/uploads/ferry.md")
    assert res.status_code == 404 and res.json()["error"]["code"] == "document_not_found"


@pytest.mark.parametrize("uploads_left", ["another", "none", "no folder"])
def test_a_delete_cut_short_after_the_file_is_finished_by_a_reindex(
    server: Server, uploads_left: str
) -> None:
    """The re-index syncs the uploads away whatever is left of uploads/: other uploads, an
    empty folder or none at all (the server's own folder: nothing to report about it)."""
    uploaded(server)
    uploads = server.settings.uploads_dir
    if uploads_left == "another":
        uploaded(server, "tide.md", b"# Tide\n\nHigh tide at the Orrin pier is at noon.")
    (uploads / "ferry.md").unlink()  # what a kill between the steps leaves
    if uploads_left == "no folder":
        uploads.rmdir()
    result = server.reindex()["result"]
    assert result["documents"]["removed"] == 1 and result["failures"] == []
    expected = ["uploads/tide.md"] if uploads_left == "another" else []
    assert doc_ids(server, prefix="uploads/") == expected
    corpus = ["guides/bikes.md", "guides/policy.txt", "harbor.md", "tea.txt"]
    assert sorted(doc_ids(server)) == corpus + expected


def test_delete_of_an_unknown_id_is_404_and_changes_nothing(server: Server) -> None:
    uploads = server.settings.uploads_dir
    uploads.mkdir(parents=True)
    (uploads / "stray.md").write_bytes(NOTE)  # in uploads/, never indexed
    version = server.index_version
    for doc_id in ("uploads/stray.md", "uploads/nope.md", "nope.txt", "uploads/a/b.md"):
        res = server.client.delete(f"/v1/documents/{doc_id}")
        assert res.status_code == 404 and res.json()["error"]["code"] == "document_not_found"
    assert (uploads / "stray.md").read_bytes() == NOTE
    assert server.index_version == version


def test_delete_of_a_corpus_document(server: Server) -> None:
    assert server.client.delete("/v1/documents/guides/policy.txt").status_code == 200
    assert "guides/policy.txt" not in doc_ids(server)
    assert (server.corpus / "guides" / "policy.txt").is_file()  # the server never deletes sources


def test_reindex_syncs_the_corpus_folder_and_reports_the_diff(server: Server) -> None:
    (server.corpus / "new.txt").write_text("Marigold kayaks launch from the east beach.", "utf-8")
    (server.corpus / "tea.txt").write_text("Ferncombe tea rooms now open on Mondays too.", "utf-8")
    (server.corpus / "guides" / "policy.txt").unlink()
    before = server.index_version
    result = server.reindex()["result"]
    assert result["documents"] == {
        "added": 1, "changed": 1, "removed": 1, "unchanged": 2, "failed": 0,
    }  # fmt: skip
    assert result["failures"] == []  # no uploads/ folder yet: nothing to report about it
    assert result["index_version"] == server.index_version == before + 1
    assert sorted(doc_ids(server)) == ["guides/bikes.md", "harbor.md", "new.txt", "tea.txt"]
    body = server.chat("Marigold kayaks?").json()
    assert body["sources"][0]["document_id"] == "new.txt"
    assert body["ragtune"]["index_version"] == server.index_version
    again = server.reindex()["result"]["documents"]
    assert again["unchanged"] == 4 and again["added"] == again["removed"] == 0


def test_reindex_of_the_corpus_and_the_uploads_is_one_commit(server: Server) -> None:
    uploaded(server)
    uploads = server.settings.uploads_dir
    (uploads / "late.md").write_bytes(b"# Late\n\nThe Quillon bridge opens at dawn.")  # job killed
    (server.corpus / "new.txt").write_text("Marigold kayaks launch from the east beach.", "utf-8")
    (server.corpus / "harbor.md").unlink()
    before = server.index_version
    result = server.reindex()["result"]
    assert result["index_version"] == server.index_version == before + 1
    assert result["documents"] == {
        "added": 2, "changed": 0, "removed": 1, "unchanged": 4, "failed": 0,
    }  # fmt: skip
    assert sorted(doc_ids(server)) == ["guides/bikes.md", "guides/policy.txt", "new.txt",
                                       "tea.txt", "uploads/ferry.md", "uploads/late.md"]  # fmt: skip


def test_a_reembed_embeds_every_chunk_once_in_one_commit(server: Server) -> None:
    uploaded(server)
    before = server.index_version
    res = server.client.post("/v1/documents/reindex", json={"reembed": True})
    result = server.wait_job(res.json()["id"])["result"]
    assert result["index_version"] == server.index_version == before + 1
    listed = server.client.get("/v1/documents").json()["data"]
    chunks = sum(d["chunks"] for d in listed)
    assert result["chunks"]["changed"] == chunks and result["chunks"]["unchanged"] == 0
    assert 0 < result["embedded"] <= chunks  # not the uploads a second time
    assert result["documents"]["changed"] == len(listed) == 5


def test_a_sync_of_one_root_leaves_the_other_alone(server: Server) -> None:
    """What sync may remove: documents of the roots given, by their files and their ids."""
    uploaded(server)
    uploads = server.settings.uploads_dir
    indexer = server.services.indexer()
    (server.corpus / "harbor.md").unlink()
    report = indexer.ingest([server.corpus], sync=True)  # `ragtune ingest CORPUS --sync`
    assert report.documents.removed == 1  # harbor.md; not the upload (its file is elsewhere)
    assert "uploads/ferry.md" in doc_ids(server)
    # A file of uploads/ indexed under another name (by hand): not the uploads' document.
    (uploads / "tide.md").write_bytes(NOTE + b" Tide tables too.")
    indexer.ingest([uploads / "tide.md"])
    (uploads / "tide.md").unlink()
    (uploads / "ferry.md").unlink()
    report = indexer.ingest([IngestRoot(uploads, "uploads/", managed=True)], sync=True)
    assert report.failures == [] and report.documents.removed == 1
    assert sorted(doc_ids(server)) == ["guides/bikes.md", "guides/policy.txt", "tea.txt",
                                       "tide.md"]  # fmt: skip


def test_a_reindex_refuses_a_linked_uploads_folder_and_keeps_its_documents(
    server: Server,
) -> None:
    uploaded(server)
    uploads = server.settings.uploads_dir
    outside = server.settings.data_dir.parent / "elsewhere"  # outside the data directory
    uploads.rename(outside)
    uploads.symlink_to(outside, target_is_directory=True)
    (server.corpus / "new.txt").write_text("Marigold kayaks launch from the east beach.", "utf-8")
    result = server.reindex()["result"]
    assert [f["code"] for f in result["failures"]] == ["symlink_outside_root"]
    assert result["documents"]["added"] == 1 and result["documents"]["removed"] == 0
    assert {"new.txt", "uploads/ferry.md"} <= set(doc_ids(server))


def test_reindex_body(server: Server) -> None:
    res = server.client.post("/v1/documents/reindex", json={"reembed": True})
    assert res.status_code == 202 and res.json()["params"] == {"reembed": True}
    assert server.wait_job(res.json()["id"])["state"] == "succeeded"
    res = server.client.post("/v1/documents/reindex", json={"bogus": 1})
    assert res.status_code == 400 and res.json()["error"]["param"] == "bogus"


# -- jobs ----------------------------------------------------------------------------------------


@pytest.fixture
def blocker(server: Server) -> Any:
    """A job of kind ingest that runs until released (or cancelled), so others queue behind it."""
    release, started = threading.Event(), threading.Event()

    def run(context: JobContext) -> dict[str, Any]:
        started.set()
        while not release.wait(0.01):
            context.check()
        return {"released": True}

    job = server.app.state.ctx.jobs.submit("ingest", run, params={}, owner="test")
    assert started.wait(5)
    yield job, release
    release.set()


def test_cancel_a_queued_job(server: Server, blocker: Any) -> None:
    first, release = blocker
    res = server.client.post("/v1/documents/reindex")
    queued = res.json()
    assert queued["state"] == "queued"
    res = server.client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert res.status_code == 200 and res.json()["id"] == queued["id"]
    release.set()
    assert server.wait_job(first.id)["state"] == "succeeded"
    done = server.wait_job(queued["id"])
    assert done["state"] == "cancelled" and done["result"] is None


def test_cancel_a_running_job(server: Server, blocker: Any) -> None:
    running, _ = blocker
    assert server.client.get(f"/v1/jobs/{running.id}").json()["state"] == "running"
    assert server.client.post(f"/v1/jobs/{running.id}/cancel").status_code == 200
    assert server.wait_job(running.id)["state"] == "cancelled"


def test_a_cancelled_upload_leaves_the_index_as_it_was(server: Server, blocker: Any) -> None:
    _, release = blocker
    version = server.index_version
    job = upload(server, ("ferry.md", NOTE)).json()
    server.client.post(f"/v1/jobs/{job['id']}/cancel")
    release.set()
    assert server.wait_job(job["id"])["state"] == "cancelled"
    assert server.index_version == version and "uploads/ferry.md" not in doc_ids(server)


def test_jobs_list_and_unknown_jobs(server: Server) -> None:
    first = server.reindex()
    second = server.reindex()
    rows = server.client.get("/v1/jobs").json()["data"]
    assert [r["id"] for r in rows] == [second["id"], first["id"]]  # newest first
    assert server.client.get("/v1/jobs", params={"kind": "train"}).json()["data"] == []
    for job_id in ("0" * 32, "not-a-job", "ABCDEF"):
        res = server.client.get(f"/v1/jobs/{job_id}")
        assert res.status_code == 404 and res.json()["error"]["code"] == "job_not_found"
    assert server.client.get("/v1/jobs/..%2F..%2Fetc").status_code == 404
    res = server.client.post(f"/v1/jobs/{'0' * 32}/cancel")
    assert res.status_code == 404


@pytest.mark.promise(11)
def test_a_failed_job_says_why_without_server_paths(make_server: ServerFactory) -> None:
    server = make_server()

    def run(context: JobContext) -> dict[str, Any]:
        raise OSError(28, "No space left on device", str(server.settings.data_dir / "index"))

    job = server.app.state.ctx.jobs.submit("ingest", run, params={}, owner="test")
    done = server.wait_job(job.id)
    assert done["state"] == "failed" and done["error"]["code"] == "insufficient_storage"
    assert str(server.settings.data_dir) not in str(done)
