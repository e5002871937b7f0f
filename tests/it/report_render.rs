//! `orchestrate report --format html|junit`: a finished run drawn for the
//! MSP's client (one HTML page) and for a CI dashboard (JUnit XML).
//!
//! The run here is the one an MSP dreads, built from the runner's own
//! events: acme-dental's canary passed, then wave 2 lost one host that
//! rolled back and one whose rollback failed, and the client halted with
//! wave 3 untouched and a Linux box skipped; smith & jones finished with one
//! laptop out of reach. Output and a host name carry markup and `&`, as
//! untrusted endpoints may. The HTML is read back through headless
//! Chromium, the JUnit through a real XML parser.

use crate::report_fixture;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orchestrate::report::run_json::Report;
use orchestrate::report::{html, junit};
use report_fixture::{EVIL_HOST, Fleet, dreaded_run};

// ---------------------------------------------------------------- HTML

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page as headless Chromium parsed it (`--dump-dom`), isolated from
/// the network and from any profile.
pub(crate) fn rendered_dom(page: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the HTML report tests read the page through headless Chromium. \
         Install it with `sudo bash scripts/deps/chromium.sh` (scripts/install-test-deps.sh runs it)."
    );
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "chromium did not finish rendering {} in 90s",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("<body"),
        "chromium printed no DOM ({})",
        out.status
    );
    dom
}

fn select<'a>(doc: &'a scraper::Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    doc.select(&scraper::Selector::parse(css).unwrap())
        .collect()
}

/// An element's text as a reader sees it: a space between boxes (cells,
/// rows, paragraphs, SVG labels) but not around inline markup, titles
/// (tooltips) left out, whitespace runs made one space.
fn text(element: &scraper::ElementRef) -> String {
    fn walk(element: scraper::ElementRef, out: &mut String) {
        for child in element.children() {
            if let Some(t) = child.value().as_text() {
                out.push_str(t);
            } else if let Some(e) = scraper::ElementRef::wrap(child) {
                let name = e.value().name();
                if matches!(name, "title" | "style") {
                    continue;
                }
                let inline = matches!(name, "strong" | "b" | "em" | "i" | "code" | "a" | "small");
                if !inline {
                    out.push(' ');
                }
                walk(e, out);
                if !inline {
                    out.push(' ');
                }
            }
        }
    }
    let mut out = String::new();
    walk(*element, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn client_section<'a>(doc: &'a scraper::Html, name: &str) -> scraper::ElementRef<'a> {
    select(doc, "section.client")
        .into_iter()
        .find(|s| {
            select_in(s, "h2")
                .first()
                .is_some_and(|h| text(h).starts_with(name))
        })
        .unwrap_or_else(|| panic!("no section for client {name}"))
}

fn select_in<'a>(element: &scraper::ElementRef<'a>, css: &str) -> Vec<scraper::ElementRef<'a>> {
    element
        .select(&scraper::Selector::parse(css).unwrap())
        .collect()
}

/// The row of `host` in a client's host list, as one line of text.
fn host_row(section: &scraper::ElementRef, host: &str) -> String {
    select_in(section, "details.host > summary")
        .iter()
        .map(text)
        .find(|t| t.starts_with(host))
        .unwrap_or_else(|| panic!("no row for host {host}"))
}

struct Page {
    source: String,
    doc: scraper::Html,
    _dir: tempfile::TempDir,
}

fn open_in_chromium(report: &Report) -> Page {
    let source = html::render(report);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    std::fs::write(&path, &source).unwrap();
    let doc = scraper::Html::parse_document(&rendered_dom(&path));
    Page {
        source,
        doc,
        _dir: dir,
    }
}

#[test]
fn the_html_report_shows_each_client_with_its_hosts_by_outcome() {
    let page = open_in_chromium(&dreaded_run());
    let header = text(&select(&page.doc, "header.run")[0]);
    for fact in [
        "20261122-075319-7f3a",
        "playbooks/kes-to-defender.yml",
        "rollback failed",
        "2026-11-22 07:53:19 UTC",
    ] {
        assert!(header.contains(fact), "the header shows {fact}: {header}");
    }

    let acme = client_section(&page.doc, "acme-dental");
    assert!(text(&select_in(&acme, "h2")[0]).contains("halted"));
    assert!(text(&acme).contains("Halted: 2 hosts failed, more than the failure budget of 1"));
    let legend = text(&select_in(&acme, ".legend")[0]);
    assert_eq!(
        legend,
        "Succeeded 2 Failed, rolled back 1 Rolled back to an unsupported product 0 Rollback failed 1 Unreachable 0 Not started 2 Skipped 1 All hosts 7"
    );
    let chart = select_in(&acme, "svg.bar")[0];
    assert_eq!(
        chart.value().attr("aria-label"),
        Some(
            "7 hosts: 2 succeeded, 1 failed, rolled back, 1 rollback failed, 2 not started, 1 skipped"
        )
    );

    let sj = client_section(&page.doc, "smith & jones");
    assert!(text(&select_in(&sj, "h2")[0]).contains("failed"));
    assert_eq!(
        text(&select_in(&sj, ".legend")[0]),
        "Succeeded 2 Failed, rolled back 0 Rolled back to an unsupported product 0 Rollback failed 0 Unreachable 1 Not started 0 Skipped 0 All hosts 3"
    );
    assert!(host_row(&acme, "acme-ws04").contains("Not started"));
    assert!(host_row(&acme, "acme-lnx01").contains("Skipped"));

    let overview = text(&select(&page.doc, "section.overview")[0]);
    assert!(
        overview.contains("acme-dental halted 7 2 1 0 1 0 2 1 12m20s"),
        "{overview}"
    );
    assert!(
        overview.contains("smith & jones failed 3 2 0 0 0 1 0 0 1m58s"),
        "{overview}"
    );
}

#[test]
fn the_html_report_draws_the_waves_on_a_timeline_with_their_host_counts() {
    let page = open_in_chromium(&dreaded_run());
    let acme = client_section(&page.doc, "acme-dental");
    let timeline = text(&select_in(&acme, "svg.timeline")[0]);
    assert!(timeline.contains("Wave 1 1 host · 2m00s"), "{timeline}");
    assert!(timeline.contains("Wave 2 3 hosts · "), "{timeline}");
    assert!(
        timeline.contains("Wave 3 not started · 2 hosts"),
        "{timeline}"
    );
    assert!(
        timeline.contains("07:53:19"),
        "the axis starts at the first wave: {timeline}"
    );
    let bars = select_in(&acme, "svg.timeline rect.seg").len();
    assert_eq!(
        bars,
        1 + 3,
        "wave 1 is one colour; wave 2 three (succeeded, failed, rollback failed)"
    );

    let waves = select_in(&acme, "table.waves tbody tr");
    assert_eq!(waves.len(), 3);
    assert_eq!(
        text(&waves[0]),
        "1 1 2026-11-22 07:53:19 UTC 2026-11-22 07:55:19 UTC 2m00s 1 succeeded"
    );
    assert!(text(&waves[1]).ends_with("1 succeeded, 1 failed, rolled back, 1 rollback failed"));
    assert!(text(&waves[2]).starts_with("3 2 not started"));
}

#[test]
fn the_html_report_shows_each_failed_host_with_its_failing_step_and_rollback() {
    let page = open_in_chromium(&dreaded_run());
    let acme = client_section(&page.doc, "acme-dental");
    let problems: Vec<String> = select_in(&acme, "article.problem")
        .iter()
        .map(text)
        .collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");

    let ws02 = problems
        .iter()
        .find(|p| p.starts_with("acme-ws02"))
        .unwrap();
    for shown in [
        "Failed, rolled back wave 2",
        "Failing step remove Kaspersky Endpoint Security",
        "Phase uninstall",
        "Exit code 1603",
        "Attempts 3",
        "Detail exit code 1603 is not ok",
        "Removal failed.",
        "Error 1603: a fatal error occurred during removal: KLPASSWD rejected",
        "Rollback succeeded: the endpoint was put back as it was",
        "reinstall Kaspersky from the cached package ok 0",
        "make sure some antivirus is on ok 0",
    ] {
        assert!(ws02.contains(shown), "acme-ws02 shows {shown:?}:\n{ws02}");
    }

    let fs01 = problems
        .iter()
        .find(|p| p.starts_with("acme-fs01"))
        .unwrap();
    for shown in [
        "Rollback failed",
        "Failing step Defender real-time protection is on",
        "Phase verify",
        "Outcome timed out",
        "waiting for WinDefend",
        "Rollback failed: a person must look at this endpoint",
        "reinstall Kaspersky from the cached package failed 1618",
        "Another installation is already in progress.",
    ] {
        assert!(fs01.contains(shown), "acme-fs01 shows {shown:?}:\n{fs01}");
    }

    let sj = client_section(&page.doc, "smith & jones");
    let laptop = text(&select_in(&sj, "article.problem")[0]);
    assert!(laptop.starts_with("sj-laptop03 Unreachable"), "{laptop}");
    assert!(laptop.contains("no connection after 25s"));
    assert!(laptop.contains("nothing was changed"));
}

#[test]
fn the_html_report_gives_evidence_of_removal_and_verification_per_host() {
    let page = open_in_chromium(&dreaded_run());
    let acme = client_section(&page.doc, "acme-dental");
    assert_eq!(
        host_row(&acme, "acme-ws01"),
        "acme-ws01 wave 1 Succeeded ok 2 steps · 2026-11-22 07:54:56 UTC ok 1 step · 2026-11-22 07:55:19 UTC 1m58s"
    );
    let fs01 = host_row(&acme, "acme-fs01");
    assert!(fs01.contains("Rollback failed ok 1 step"), "{fs01}");
    assert!(fs01.contains("failed 1 step"), "verify failed: {fs01}");
    assert!(fs01.ends_with("12m20s"), "{fs01}");
    assert!(host_row(&acme, "acme-ws05").contains("Not started not run not run –"));

    // Open a host: every step with its time, and the verify step's output.
    let ws01 = select_in(&acme, "details.host")
        .into_iter()
        .find(|d| text(d).starts_with("acme-ws01"))
        .unwrap();
    let log = text(&ws01);
    assert!(
        log.contains(
            "verify Defender real-time protection is on ok 0 1 2.9s 2026-11-22 07:55:19 UTC"
        ),
        "{log}"
    );
    assert!(
        log.contains("RealTimeProtectionEnabled : True AMRunningMode : Normal"),
        "{log}"
    );
    assert!(
        log.contains("uninstall remove Kaspersky Endpoint Security ok 3010"),
        "{log}"
    );
    // The reboot KES's removal asked for, and whose sessions it cut.
    assert!(
        log.contains("for step remove Kaspersky Endpoint Security ; logged on: alice (console, Active), <bob> (rdp-tcp#2, Disc)."),
        "{log}"
    );
    let ws03 = select_in(&acme, "details.host")
        .into_iter()
        .find(|d| text(d).starts_with("acme-ws03"))
        .unwrap();
    assert!(
        text(&ws03).contains("for step remove Kaspersky Endpoint Security ; nobody was logged on."),
        "{}",
        text(&ws03)
    );

    let gap = text(&acme);
    assert!(
        gap.contains("longest 12m20s (acme-fs01), median 1m58s"),
        "{gap}"
    );
}

#[test]
fn the_html_report_is_self_contained_and_keeps_untrusted_text_as_text() {
    let page = open_in_chromium(&dreaded_run());
    for network in ["http://", "https://", "//fonts", "@import"] {
        assert!(
            !page.source.contains(network),
            "the page refers to {network}"
        );
    }
    for element in select(&page.doc, "*") {
        for (name, value) in element.value().attrs() {
            if matches!(
                name,
                "src" | "href" | "action" | "poster" | "srcset" | "data"
            ) {
                assert!(
                    value.starts_with('#'),
                    "<{} {name}={value:?}> leaves the page",
                    element.value().name()
                );
            }
        }
    }
    let csp = select(&page.doc, "meta[http-equiv=Content-Security-Policy]");
    assert!(
        csp[0]
            .value()
            .attr("content")
            .unwrap()
            .starts_with("default-src 'none'")
    );

    assert!(
        select(&page.doc, "script").is_empty(),
        "the page has no script, and markup in the report made none"
    );
    let title = text(&select(&page.doc, "title")[0]);
    assert!(!title.contains("pwned"), "{title}");

    let sj = client_section(&page.doc, "smith & jones");
    assert_eq!(
        text(&select_in(&sj, "h2")[0]),
        "smith & jones failed",
        "the & is a character, not markup"
    );
    let evil = select_in(&sj, "details.host")
        .into_iter()
        .find(|d| {
            select_in(d, ".hostname")
                .first()
                .is_some_and(|n| text(n) == EVIL_HOST)
        })
        .expect("the host's name is shown exactly as written");
    let log = text(&evil);
    assert!(
        log.contains("<script>document.title='pwned'</script> R&D share healthy"),
        "the output is shown as text, colour codes removed: {log}"
    );
}

#[test]
fn a_400_host_client_renders_as_one_collapsed_row_per_host() {
    let hosts: Vec<String> = (1..=400).map(|i| format!("big-ws{i:03}")).collect();
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let mut f = Fleet::new(&[("bigcorp", &[&names[..1], &names[1..40], &names[40..]], &[])]);
    for (i, wave) in [&names[..1], &names[1..40], &names[40..]]
        .iter()
        .enumerate()
    {
        f.wave("bigcorp", i + 1, wave);
        for host in *wave {
            f.migrates("bigcorp", host, i + 1, "RealTimeProtectionEnabled : True");
        }
        f.wave_done("bigcorp", i + 1);
    }
    let started = Instant::now();
    let page = html::render(&f.report);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(page.len() < 4_000_000, "{} bytes", page.len());
    let doc = scraper::Html::parse_document(&page);
    assert_eq!(select(&doc, "details.host").len(), 400);
    assert_eq!(
        select(&doc, "details.host[open]").len(),
        0,
        "rows start collapsed"
    );
    assert!(text(&select(&doc, ".legend")[0]).starts_with("Succeeded 400 "));
}

#[test]
fn an_interrupted_check_run_says_so_and_shows_the_wave_that_did_not_finish() {
    let mut f = Fleet::new(&[("acme", &[&["acme-ws01"], &["acme-ws02"]], &[])]);
    f.report.check = true;
    f.wave("acme", 1, &["acme-ws01"]);
    f.host("acme", "acme-ws01", 1);
    f.wait(4_000);
    let finished_at = f.time();
    f.emit(orchestrate::run::Event::RunFinished {
        status: orchestrate::run::RunStatus::Interrupted,
        finished_at,
    });
    let doc = scraper::Html::parse_document(&html::render(&f.report));
    let header = text(&select(&doc, "header.run")[0]);
    assert!(header.contains("interrupted"), "{header}");
    assert!(header.contains("Check mode"), "{header}");
    let timeline = text(&select(&doc, "svg.timeline")[0]);
    assert!(
        timeline.contains("Wave 1 1 host · did not finish"),
        "{timeline}"
    );
    assert!(
        timeline.contains("Wave 2 not started · 1 host"),
        "{timeline}"
    );
    assert_eq!(select(&doc, "svg.timeline rect.open").len(), 1);

    let xml = junit::render(&f.report);
    let junit = roxmltree::Document::parse(&xml).unwrap();
    let suite = junit
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!((attr(suite, "tests"), attr(suite, "skipped")), ("2", "2"));
    assert!(xml.contains(r#"<property name="check_mode" value="true"/>"#));
    assert!(xml.contains(r#"<property name="client_status" value="interrupted"/>"#));
}

// ---------------------------------------------------------------- JUnit

fn attr<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
    node.attribute(name)
        .unwrap_or_else(|| panic!("<{}> has no {name}", node.tag_name().name()))
}

fn children<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    node.children().filter(|n| n.has_tag_name(tag)).collect()
}

#[test]
fn the_junit_report_has_a_suite_per_client_and_a_case_per_host() {
    let xml = junit::render(&dreaded_run());
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("not XML ({e}):\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(
        (
            attr(root, "tests"),
            attr(root, "failures"),
            attr(root, "skipped")
        ),
        ("10", "3", "3")
    );

    let suites = children(root, "testsuite");
    let names: Vec<&str> = suites.iter().map(|s| attr(*s, "name")).collect();
    assert_eq!(names, ["acme-dental", "smith & jones"]);
    // (tests, failures, errors, skipped) per client, as the report counts them.
    let expected = [(7, 2, 0, 3), (3, 1, 0, 0)];
    for (suite, (tests, failures, errors, skipped)) in suites.iter().zip(expected) {
        let cases = children(*suite, "testcase");
        let count = |tag: &str| {
            cases
                .iter()
                .filter(|c| !children(**c, tag).is_empty())
                .count()
        };
        let number = |name: &str| attr(*suite, name).parse::<usize>().unwrap();
        assert_eq!(number("tests"), tests);
        assert_eq!(number("tests"), cases.len());
        assert_eq!(number("failures"), failures);
        assert_eq!(number("failures"), count("failure"));
        assert_eq!(number("errors"), errors);
        assert_eq!(number("skipped"), skipped);
        assert_eq!(number("skipped"), count("skipped"));
        assert!(attr(*suite, "time").parse::<f64>().unwrap() > 0.0);
        assert!(attr(*suite, "timestamp").starts_with("2026-11-22T"));
        for case in &cases {
            assert_eq!(attr(*case, "classname"), attr(*suite, "name"));
            attr(*case, "name");
            attr(*case, "time").parse::<f64>().unwrap();
            for failure in children(*case, "failure") {
                attr(failure, "message");
                attr(failure, "type");
            }
            for skipped in children(*case, "skipped") {
                attr(skipped, "message");
            }
        }
    }
    let property = |suite: roxmltree::Node, name: &str| {
        children(children(suite, "properties")[0], "property")
            .into_iter()
            .find(|p| attr(*p, "name") == name)
            .map(|p| attr(p, "value").to_string())
    };
    assert_eq!(
        property(suites[0], "halted").unwrap(),
        "2 hosts failed, more than the failure budget of 1"
    );
    assert_eq!(property(suites[1], "client_status").unwrap(), "failed");

    // A host's log says when it was rebooted and whose sessions that cut.
    let ws01 = suites[0]
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("acme-ws01"))
        .unwrap();
    let out = children(ws01, "system-out")[0].text().unwrap();
    assert!(
        out.contains(
            "rebooted  for step remove Kaspersky Endpoint Security; logged on: alice (console, Active), <bob> (rdp-tcp#2, Disc)"
        ),
        "{out}"
    );
}

#[test]
fn a_junit_failure_names_the_failing_step_with_its_output_and_the_rollback() {
    let xml = junit::render(&dreaded_run());
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let case = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap_or_else(|| panic!("no testcase {name}"))
    };
    let failure = children(case("acme-ws02"), "failure")[0];
    assert_eq!(attr(failure, "type"), "failed");
    assert_eq!(
        attr(failure, "message"),
        "step `remove Kaspersky Endpoint Security` (uninstall) failed with exit code 1603; rolled back"
    );
    let body = failure.text().unwrap();
    for shown in [
        "failing step: uninstall / remove Kaspersky Endpoint Security: failed, exit code 1603, 3 attempt(s)",
        "Error 1603: a fatal error occurred during removal: KLPASSWD rejected",
        "rollback: succeeded (2 step(s))",
        "reinstall Kaspersky from the cached package (exit code 0)",
    ] {
        assert!(body.contains(shown), "the failure shows {shown:?}:\n{body}");
    }

    let failure = children(case("acme-fs01"), "failure")[0];
    assert_eq!(attr(failure, "type"), "rollback_failed");
    assert!(attr(failure, "message").contains("ROLLBACK FAILED"));
    let body = failure.text().unwrap();
    assert!(body.contains("rollback: FAILED"), "{body}");
    assert!(
        body.contains("Another installation is already in progress."),
        "{body}"
    );

    let failure = children(case("sj-laptop03"), "failure")[0];
    assert_eq!(attr(failure, "type"), "unreachable");
    assert_eq!(
        attr(failure, "message"),
        "unreachable: host sj-laptop03: no connection after 25s"
    );

    let skipped = children(case("acme-ws04"), "skipped")[0];
    assert_eq!(attr(skipped, "message"), "not_started: client halted");
    let skipped = children(case("acme-lnx01"), "skipped")[0];
    assert!(attr(skipped, "message").starts_with("skipped: os linux"));
    assert!(children(case("acme-ws01"), "failure").is_empty());
}

#[test]
fn the_junit_report_escapes_names_and_output_and_drops_control_characters() {
    let xml = junit::render(&dreaded_run());
    assert!(
        !xml.contains("<script>"),
        "markup from the report is escaped"
    );
    assert!(!xml.contains('\u{1b}'), "XML 1.0 cannot carry ESC");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(EVIL_HOST))
        .expect("the host's name round-trips exactly");
    assert_eq!(attr(case, "classname"), "smith & jones");
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure") && n.attribute("type") == Some("failed"))
        .unwrap();
    assert!(
        failure
            .text()
            .unwrap()
            .contains("<script>document.title='pwned'</script> R&D share healthy"),
        "output is text, colour codes removed"
    );
    let out = children(case, "system-out")[0].text().unwrap();
    assert!(
        out.contains(
            "ok        verify / Defender real-time protection is on (exit 0, 1 attempt(s), 2.9s)"
        ),
        "{out}"
    );
    assert!(children(case, "script").is_empty());
}
