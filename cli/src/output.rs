//! What meshctl shows a person: ✔/✘ progress lines, tables, JSON and YAML,
//! the block of ready-to-paste commands and the live traffic line.
//!
//! The formatting is pure (`*_line`, [`table`], [`render`], [`age`],
//! [`curl_block`], [`traffic_line`], [`live_update`]) and unit-tested;
//! [`Console`] only writes the strings.

use std::io::{IsTerminal, Write};

/// One command to paste, with what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hint {
    /// The shell command, e.g. `curl http://127.0.1.10:8080/`.
    pub(crate) command: String,
    /// What it demonstrates, shown as a trailing `# comment`.
    pub(crate) comment: String,
}

/// Request rate and success of one upstream over the last interval.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamRate {
    /// Shown name, e.g. `backend(cluster-b)`.
    pub(crate) label: String,
    /// Requests per second.
    pub(crate) rps: f64,
    /// Share of non-5xx responses, 0.0–1.0; `None` when no request finished.
    pub(crate) success: Option<f64>,
}

/// Everything on the live traffic line.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Traffic {
    /// Per upstream, in a stable order.
    pub(crate) upstreams: Vec<UpstreamRate>,
    /// Tunnel streams gateway A handled since start; `None` if unknown.
    pub(crate) gateway_streams: Option<u64>,
}

/// How a command prints what it got (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// Pretty-printed JSON.
    Json,
    /// YAML.
    Yaml,
}

/// `value` as pretty JSON or YAML (newline-terminated); `None` for
/// [`Format::Table`], which each command renders itself.
pub(crate) fn render(format: Format, value: &impl serde::Serialize) -> Option<String> {
    match format {
        Format::Table => None,
        Format::Json => Some(match serde_json::to_string_pretty(value) {
            Ok(mut s) => {
                s.push('\n');
                s
            }
            Err(e) => format!("{{\"error\": \"cannot render json: {e}\"}}\n"),
        }),
        Format::Yaml => Some(
            serde_yaml_ng::to_string(value)
                .unwrap_or_else(|e| format!("error: cannot render yaml: {e}\n")),
        ),
    }
}

/// Left-aligned columns separated by three spaces, kubectl-style, each line
/// trimmed at its end; no trailing newline.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(w),
                None => widths.push(w),
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("   ");
            }
            out.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(&mut headers.iter().copied())];
    for row in rows {
        lines.push(line(&mut row.iter().map(String::as_str)));
    }
    lines.join("\n")
}

/// A duration as kubectl shows ages: `42s`, `5m`, `3h`, `12d`.
pub(crate) fn short_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The age of an RFC 3339 timestamp at `now` (unix seconds); `None` when
/// the timestamp does not parse.
pub(crate) fn age(timestamp: &str, now: i64) -> Option<String> {
    let t = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(short_duration(now - t.unix_timestamp()))
}

/// Now, in unix seconds.
pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `✔ message`.
pub(crate) fn ok_line(message: &str) -> String {
    format!("✔ {message}")
}

/// `✘ message`.
pub(crate) fn fail_line(message: &str) -> String {
    format!("✘ {message}")
}

/// The commands, aligned so their comments form a column:
/// `  curl http://127.0.1.10:8080/   # frontend → backend`.
pub(crate) fn curl_block(hints: &[Hint]) -> String {
    let width = hints.iter().map(|h| h.command.len()).max().unwrap_or(0);
    let mut out = String::new();
    for hint in hints {
        out.push_str(&format!(
            "  {:width$}   # {}\n",
            hint.command,
            hint.comment,
            width = width
        ));
    }
    out
}

/// `traffic  backend(local) 5.0 rps ✔100%  backend(cluster-b) 5.0 rps ✔100%  gateway A streams 12`.
pub(crate) fn traffic_line(traffic: &Traffic) -> String {
    let mut out = String::from("traffic");
    for upstream in &traffic.upstreams {
        out.push_str(&format!("  {} {:.1} rps ", upstream.label, upstream.rps));
        match upstream.success {
            None => out.push('–'),
            Some(share) => {
                // Floor, so 99.7 % is not shown as a perfect 100 %.
                let pct = (share.clamp(0.0, 1.0) * 100.0).floor();
                let mark = if share >= 1.0 { '✔' } else { '✘' };
                out.push_str(&format!("{mark}{pct:.0}%"));
            }
        }
    }
    if let Some(streams) = traffic.gateway_streams {
        out.push_str(&format!("  gateway A streams {streams}"));
    }
    out
}

/// How to show a refreshed live line: on a terminal (`width` columns, if
/// known), overwrite the current line (carriage return, erase line, no
/// newline), cut to fit so it never wraps; elsewhere a plain line.
pub(crate) fn live_update(tty: bool, width: Option<usize>, line: &str) -> String {
    if tty {
        let fit: String = match width {
            Some(w) if line.chars().count() >= w => {
                let mut cut: String = line.chars().take(w.saturating_sub(2)).collect();
                cut.push('…');
                cut
            }
            _ => line.to_owned(),
        };
        format!("\r\x1b[2K{fit}")
    } else {
        format!("{line}\n")
    }
}

/// Writes progress to stdout and failures to stderr, keeping the live line
/// (if one is open on a terminal) from being glued to the next message.
pub(crate) struct Console {
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    tty: bool,
    live_open: bool,
}

impl Console {
    /// stdout and stderr of this process.
    pub(crate) fn stdout() -> Self {
        let stdout = std::io::stdout();
        let tty = stdout.is_terminal();
        Self {
            out: Box::new(stdout),
            err: Box::new(std::io::stderr()),
            tty,
            live_open: false,
        }
    }

    /// Whether stdout is a terminal (the live line is then redrawn in place).
    pub(crate) fn is_tty(&self) -> bool {
        self.tty
    }

    /// A plain line on stdout.
    pub(crate) fn line(&mut self, text: &str) {
        self.close_live();
        // A closed stdout (e.g. `| head`) is not worth failing the run for.
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// `✔ message` on stdout.
    pub(crate) fn ok(&mut self, message: &str) {
        self.line(&ok_line(message));
    }

    /// Text as it is on stdout (a rendered document or table), with a final
    /// newline added if missing.
    pub(crate) fn print(&mut self, text: &str) {
        self.close_live();
        let _ = write!(self.out, "{text}");
        if !text.ends_with('\n') {
            let _ = writeln!(self.out);
        }
        let _ = self.out.flush();
    }

    /// `✘ message` on stdout: a failed check, part of a report rather
    /// than an error of meshctl itself.
    pub(crate) fn fail_out(&mut self, message: &str) {
        self.line(&fail_line(message));
    }

    /// `✘ message` on stderr.
    pub(crate) fn fail(&mut self, message: &str) {
        self.close_live();
        let _ = writeln!(self.err, "{}", fail_line(message));
        let _ = self.err.flush();
    }

    /// Raw text on stderr (e.g. a log tail after a failure).
    pub(crate) fn detail(&mut self, text: &str) {
        self.close_live();
        let _ = write!(self.err, "{text}");
        let _ = self.err.flush();
    }

    /// Shows or refreshes the live line.
    pub(crate) fn live(&mut self, line: &str) {
        let width = if self.tty {
            rustix::termios::tcgetwinsize(std::io::stdout())
                .ok()
                .map(|w| usize::from(w.ws_col))
                .filter(|w| *w > 0)
        } else {
            None
        };
        let _ = write!(self.out, "{}", live_update(self.tty, width, line));
        let _ = self.out.flush();
        self.live_open = self.tty;
    }

    fn close_live(&mut self) {
        if self.live_open {
            let _ = writeln!(self.out);
            self.live_open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(label: &str, rps: f64, success: Option<f64>) -> UpstreamRate {
        UpstreamRate {
            label: label.into(),
            rps,
            success,
        }
    }

    #[test]
    fn status_lines_carry_their_mark() {
        assert_eq!(ok_line("CA for cluster-a"), "✔ CA for cluster-a");
        assert_eq!(fail_line("gateway cluster-a"), "✘ gateway cluster-a");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "VALID", "AGE"],
            &[
                vec!["web".into(), "True".into(), "5m".into()],
                vec!["checkout".into(), "<none>".into(), "12d".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME       VALID    AGE\nweb        True     5m\ncheckout   <none>   12d"
        );
        assert_eq!(table(&["A", "B"], &[]), "A   B");
    }

    #[test]
    fn json_and_yaml_rendering() {
        let v = serde_json::json!({"a": 1, "b": ["x"]});
        assert_eq!(render(Format::Table, &v), None);
        assert_eq!(
            render(Format::Json, &v).unwrap(),
            "{\n  \"a\": 1,\n  \"b\": [\n    \"x\"\n  ]\n}\n"
        );
        assert_eq!(render(Format::Yaml, &v).unwrap(), "a: 1\nb:\n- x\n");
    }

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(short_duration(-5), "0s");
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(60), "1m");
        assert_eq!(short_duration(7200), "2h");
        assert_eq!(short_duration(3 * 86_400), "3d");
        assert_eq!(age("1970-01-01T00:01:00Z", 180).as_deref(), Some("2m"));
        assert_eq!(age("yesterday", 0), None);
    }

    #[test]
    fn curl_block_aligns_comments() {
        let block = curl_block(&[
            Hint {
                command: "curl http://127.0.1.10:8080/".into(),
                comment: "frontend".into(),
            },
            Hint {
                command: "curl http://127.0.1.2:15021/metrics".into(),
                comment: "gateway A metrics".into(),
            },
        ]);
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find('#'), lines[1].find('#'));
        assert!(lines[0].starts_with("  curl http://127.0.1.10:8080/ "));
        assert!(lines[1].ends_with("# gateway A metrics"));
        assert_eq!(curl_block(&[]), "");
    }

    #[test]
    fn traffic_line_shows_rates_success_and_streams() {
        let line = traffic_line(&Traffic {
            upstreams: vec![
                up("backend(local)", 5.0, Some(1.0)),
                up("backend(cluster-b)", 4.96, Some(0.997)),
            ],
            gateway_streams: Some(12),
        });
        assert_eq!(
            line,
            "traffic  backend(local) 5.0 rps ✔100%  backend(cluster-b) 5.0 rps ✘99%  gateway A streams 12"
        );
    }

    #[test]
    fn traffic_line_without_data() {
        let line = traffic_line(&Traffic {
            upstreams: vec![up("backend", 0.0, None)],
            gateway_streams: None,
        });
        assert_eq!(line, "traffic  backend 0.0 rps –");
        assert_eq!(traffic_line(&Traffic::default()), "traffic");
    }

    #[test]
    fn live_update_overwrites_only_on_a_terminal() {
        assert_eq!(live_update(true, None, "x"), "\r\x1b[2Kx");
        assert_eq!(live_update(false, None, "x"), "x\n");
        assert_eq!(live_update(false, Some(3), "abcdef"), "abcdef\n");
    }

    #[test]
    fn live_line_is_cut_to_the_terminal_width() {
        let line = "traffic ✔✔";
        assert_eq!(live_update(true, Some(11), line), "\r\x1b[2Ktraffic ✔✔");
        // Filling the last column would wrap on some terminals.
        assert_eq!(live_update(true, Some(10), line), "\r\x1b[2Ktraffic …");
        assert_eq!(live_update(true, Some(6), line), "\r\x1b[2Ktraf…");
    }
}
