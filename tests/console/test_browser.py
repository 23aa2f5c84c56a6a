"""The web console in a real browser (Debian's chromium, Playwright): chat, documents, adapters."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.conftest import KEYS, Live, sign_in

pytestmark = pytest.mark.slow
QUESTION = "When does the Zephyrine harbor festival open?"


def ask(page: Any, question: str, models: list[str]) -> None:
    page.select_option("#chat-arms", str(len(models)))
    for number, model in enumerate(models):
        page.locator("#chat-models select").nth(number).select_option(model)
    page.fill("#chat-question", question)
    page.click("#chat-ask")


def test_a_question_streams_its_answer_beside_its_sources(pages: Any) -> None:
    page = pages()
    sign_in(page, "reader")
    page.wait_for_selector("#chat-models select option[value='rag']", state="attached")
    # Token by token: the answer's length each time the page changes it, seen by the page itself
    # (however slowly this test process polls).
    page.evaluate(
        """() => { window.__lengths = [];
        new MutationObserver(() => { const a = document.querySelector('.answer');
          if (a) window.__lengths.push(a.textContent.length); })
        .observe(document.getElementById('chat-results'),
                 {childList: true, subtree: true, characterData: true}); }"""
    )
    ask(page, QUESTION, ["rag"])
    page.wait_for_selector(".answer:not(.streaming)")
    answer = page.text_content(".answer")
    assert "Zephyrine" in answer
    lengths = sorted(set(page.evaluate("() => window.__lengths")) - {0})
    assert len(lengths) > 10 and lengths[-1] == len(answer), lengths
    first = page.locator(".sources li").first
    assert "harbor.md" in first.text_content() and "score" in first.text_content()
    assert "ninth of June" in first.locator(".passage").text_content()
    # The echo generator repeats the prompt, whose sources are numbered: [1] is cited.
    assert page.locator(".sources li.cited").count() >= 1
    stats = page.text_content(".arm .stats")
    assert "first token" in stats and "tokens" in stats and "out" in stats
    # The prompt shows one passage; the others retrieved are listed apart, not as sources.
    assert page.locator(".sources li.source").count() == 1
    assert "not shown to the model" in page.text_content(".sources li.retrieved")
    assert page.script_errors == []


def test_a_question_about_what_no_document_mentions_says_so(pages: Any) -> None:
    page = pages()
    sign_in(page, "reader")
    page.wait_for_selector("#chat-models select option[value='rag']", state="attached")
    ask(page, "Who hosts the Zephyrine podcast?", ["rag"])
    page.wait_for_selector(".answer:not(.streaming)")
    said = page.text_content(".answer")
    assert said.startswith("The sources do not say anything about") and "“podcast”" in said
    assert "“podcast”" in page.text_content(".sources li.unknown")
    assert page.locator(".sources li.source").count() == 0
    assert page.script_errors == []


def test_side_by_side_asks_every_arm_at_once(pages: Any) -> None:
    page = pages()
    sign_in(page, "reader")
    page.wait_for_selector("#chat-models select option[value='tuned:brand@v2']", state="attached")
    ask(page, QUESTION, ["rag", "base", "tuned:brand@v2", "rag+tuned:brand"])
    page.wait_for_function("() => document.querySelectorAll('.arm').length === 4")
    page.wait_for_function("() => !document.querySelector('.answer.streaming')")
    arms = page.locator(".arm")
    titles = [arms.nth(i).locator("h3").text_content() for i in range(4)]
    assert titles == ["rag", "base", "tuned:brand@v2", "rag+tuned:brand"]
    assert "[brand@v2]" in arms.nth(2).locator(".answer").text_content()  # the adapter answered
    assert arms.nth(1).locator(".sources li.source").count() == 0  # base retrieves nothing
    assert arms.nth(0).locator(".sources li.source").count() >= 1


def test_dropped_files_are_uploaded_indexed_and_listed(pages: Any) -> None:
    page = pages()
    sign_in(page, "editor")
    page.click("nav [data-page=documents]")
    page.wait_for_selector("#doc-table tbody tr[data-id='harbor.md']")
    transfer = page.evaluate_handle(
        """() => { const dt = new DataTransfer();
        dt.items.add(new File(['Lantern boats sail at nine.'], 'lanterns.md'));
        dt.items.add(new File(['Kites fly on Sundays.'], 'kites.txt'));
        return dt; }"""
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#doc-job .state-succeeded")
    diff = page.locator("#doc-job table.diff tr[data-what=documents]")
    assert diff.locator("[data-kind=added]").text_content() == "2"
    page.wait_for_selector("#doc-table tbody tr[data-id='uploads/lanterns.md']")
    row = page.locator("#doc-table tbody tr[data-id='uploads/kites.txt']")
    assert row.locator("td").nth(2).text_content() == "1"  # one chunk
    page.once("dialog", lambda dialog: dialog.accept())  # "Remove uploads/kites.txt?"
    row.locator("button", has_text="Delete").click()
    page.wait_for_selector("#doc-table tbody tr[data-id='uploads/kites.txt']", state="detached")
    # An unsupported file: the job is refused with its code, shown as a readable error.
    bad = page.evaluate_handle(
        "() => { const dt = new DataTransfer();"
        " dt.items.add(new File(['x'], 'tool.exe')); return dt; }"
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": bad})
    error = page.wait_for_selector("#errors .error")
    assert "unsupported_type" in error.text_content() and "415" in error.text_content()


def test_an_admin_promotes_and_rolls_back_an_adapter(pages: Any) -> None:
    page = pages()
    page.on("dialog", lambda dialog: dialog.accept("prod"))
    sign_in(page, "admin")
    page.click("nav [data-page=adapters]")
    v1 = page.locator("#ad-table tr[data-ref='brand@v1']")
    v2 = page.locator("#ad-table tr[data-ref='brand@v2']")
    page.wait_for_selector("#ad-table tr[data-ref='brand@v2']")
    assert v1.locator(".aliases").text_content() == "prod"
    v2.locator("button.promote").click()
    page.wait_for_function(
        "() => document.querySelector(\"tr[data-ref='brand@v2'] .aliases\").textContent === 'prod'"
    )
    assert v1.locator(".aliases").text_content() == ""
    page.click("#ad-table tr[data-name=brand] button.rollback")
    page.wait_for_function(
        "() => document.querySelector(\"tr[data-ref='brand@v1'] .aliases\").textContent === 'prod'"
    )
    # The manifest, with its loss curves drawn as SVG.
    v1.locator("button", has_text="Details").click()
    page.wait_for_selector("#ad-detail svg.plot path.curve-train")
    assert page.locator("#ad-detail svg.plot circle").count() == 3  # validation points
    assert "ab" * 32 in page.text_content("#ad-detail")


def test_a_training_job_is_followed_to_its_end_with_its_error(pages: Any) -> None:
    page = pages()
    sign_in(page, "admin")
    page.click("nav [data-page=adapters]")
    page.fill("#train-name", "voice")
    page.set_input_files(
        "#train-data", files=[{"name": "voice.jsonl", "mimeType": "application/json",
                               "buffer": b'{"prompt": "no response"}\nnot json\n'}]
    )  # fmt: skip
    page.click("#train-form button[type=submit]")
    page.wait_for_selector("#train-job .state-failed")
    error = page.text_content("#train-job .error")
    assert "invalid_training_data" in error and "voice.jsonl" in error


def test_an_admin_runs_a_comparison_and_opens_its_report(pages: Any) -> None:
    page = pages()
    sign_in(page, "admin")
    page.click("nav [data-page=compare]")
    page.fill("#cmp-limit", "2")
    page.click("#cmp-form button[type=submit]")
    page.wait_for_selector("#cmp-job .state-succeeded", timeout=60_000)
    page.click("#cmp-job button:has-text('Open report')")
    frame = page.frame_locator("#cmp-frame")
    assert "ragtune comparison" in frame.locator("h1").text_content()
    assert page.get_attribute("#cmp-frame", "sandbox") == ""  # no scripts, its own origin
    page.wait_for_selector("#cmp-list li button.open-report")


def test_a_reader_sees_no_editor_or_admin_controls_and_the_server_refuses_them(
    pages: Any, live: Live
) -> None:
    page = pages("/#adapters")
    sign_in(page, "reader")
    assert page.is_visible("#page-chat") and not page.is_visible("#page-adapters")
    for name in ("documents", "adapters", "compare"):
        assert not page.is_visible(f"nav [data-page={name}]")
    assert page.is_visible("nav [data-page=health]")
    assert page.locator("button.promote:visible, button.rollback:visible").count() == 0
    status = page.evaluate(
        """async (key) => (await fetch('/v1/adapters/brand/promote', {method: 'POST',
        headers: {Authorization: 'Bearer ' + key, 'Content-Type': 'application/json'},
        body: JSON.stringify({version: 'v2'})})).status""",
        KEYS["reader"],
    )
    assert status == 403
    page.click("nav [data-page=health]")
    page.wait_for_selector("#health-cards [data-stat=tokens_per_s]")
    # An editor gets Documents, still not the admin pages.
    editor = pages()
    sign_in(editor, "editor")
    assert editor.is_visible("nav [data-page=documents]")
    assert not editor.is_visible("nav [data-page=adapters]")


def test_a_wrong_key_is_a_readable_error_not_a_blank_page(pages: Any) -> None:
    page = pages()
    page.fill("#key", "not-a-key-0123456789")
    page.click("#login-form button[type=submit]")
    error = page.wait_for_selector("#errors .error")
    assert "invalid_api_key" in error.text_content() and "401" in error.text_content()
    assert page.is_visible("#login") and not page.is_visible("#nav")


def test_a_document_holding_script_renders_as_inert_text(pages: Any) -> None:
    page = pages()
    sign_in(page, "editor")
    ask(page, "Vexillum flag shop", ["rag"])
    page.wait_for_selector(".answer:not(.streaming)")
    passage = page.locator(".sources li", has_text="xss.md").locator(".passage")
    assert "<script>window.__xss = 1</script>" in passage.text_content()
    assert '<img src="x" onerror' in passage.text_content()
    assert "<script>" in page.text_content(".answer")  # the echo repeats the prompt
    # A file name that is markup, uploaded and listed.
    transfer = page.evaluate_handle(
        """() => { const dt = new DataTransfer();
        dt.items.add(new File(['Pennants.'], '<img src=x onerror=window.__xss=3>.md'));
        return dt; }"""
    )
    page.click("nav [data-page=documents]")
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#doc-job .state-succeeded")
    page.wait_for_selector("#doc-table td:has-text('<img src=x onerror')")
    page.wait_for_timeout(300)  # an injected onerror would have fired by now
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("main img, main script, main b").count() == 0
    assert page.script_errors == []
