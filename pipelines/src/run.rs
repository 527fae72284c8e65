//! `ikol run FILE.pipeline VAR=value ...`: run a pipeline file with GStreamer.
//!
//! A pipeline file is gst-launch syntax with a header of `#` comment lines (purpose, variables,
//! an example command) and `${VAR}` / `${VAR:-default}` placeholders. Comment lines are
//! dropped, lines joined (a trailing `\` is allowed and ignored), and placeholders replaced by
//! the values given on the command line. A value that lands inside double quotes has `\` and
//! `"` escaped; outside quotes, a value with blanks or `!` is quoted.
//!
//! The plugin is registered statically, so no `GST_PLUGIN_PATH` is needed. The run goes to
//! end-of-stream with a progress bar, counting frames (and people, from the `IkolFrameMeta`) at
//! the most downstream `ikol*` element, and ends with a summary. Stopping early (interrupt,
//! `--max-seconds`) sends EOS so muxers finalise their files; an error that arrives after that
//! is reported as a warning (RTSP teardown often fails after EOS: see the build notes). With
//! `--reconnect N`, an error from a network source (or a network stream that ends on its own
//! after the source warned) tears the pipeline down and starts it again, up to N times; files
//! written by the failed attempt are kept under `NAME.attemptK.EXT`. The table of an `ikoleval`
//! element that does not print it itself (`print=false`, its `ikol-eval` message) is printed
//! after the summary, once the progress bar is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

/// Command-line options of `ikol run`.
#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    pub file: PathBuf,
    pub vars: Vec<String>,
    pub list_vars: bool,
    pub dry_run: bool,
    pub reconnect: u32,
    pub reconnect_delay: f64,
    pub max_seconds: Option<f64>,
    /// `ELEMENT.PROPERTY=VALUE` settings applied after the pipeline is built.
    pub sets: Vec<String>,
    /// Live or network input: no frame for this many seconds is a stall (0 = never).
    pub stall_timeout: Option<f64>,
    /// Print per-element timing and queue fill at the end (`crate::stats`).
    pub stats: bool,
    /// Plays of a file input (segment seeks); 0 = until interrupted; `None` = once.
    pub loops: Option<u32>,
}

/// Seconds without a frame from live or network input after which the stream counts as
/// stalled (a frozen camera or server keeps its socket open and sends nothing).
pub const DEFAULT_STALL_TIMEOUT_S: f64 = 5.0;

/// One `--set ELEMENT.PROPERTY=VALUE`: ELEMENT is an element's factory name (every element
/// of that kind) or its name in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertySet {
    pub element: String,
    pub property: String,
    pub value: String,
}

impl std::str::FromStr for PropertySet {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (target, value) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {s:?}: expected ELEMENT.PROPERTY=VALUE"))?;
        let (element, property) = target
            .split_once('.')
            .filter(|(e, p)| !e.is_empty() && !p.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--set {s:?}: expected ELEMENT.PROPERTY=VALUE"))?;
        Ok(Self {
            element: element.to_owned(),
            property: property.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// Whether a numeric value lies in its property's range (GLib would abort on one that does
/// not); other kinds were validated by deserialising.
fn in_range(pspec: &gst::glib::ParamSpec, v: &gst::glib::Value) -> bool {
    use gst::glib::{
        ParamSpecDouble, ParamSpecFloat, ParamSpecInt, ParamSpecInt64, ParamSpecUInt,
        ParamSpecUInt64,
    };
    macro_rules! check {
        ($($spec:ty => $t:ty),*) => {
            $(if let Some(p) = pspec.downcast_ref::<$spec>() {
                return v.get::<$t>().is_ok_and(|x| x >= p.minimum() && x <= p.maximum());
            })*
        };
    }
    check!(ParamSpecDouble => f64, ParamSpecFloat => f32, ParamSpecInt => i32,
           ParamSpecUInt => u32, ParamSpecInt64 => i64, ParamSpecUInt64 => u64);
    true
}

/// Applies `--set`s to a built pipeline: an unknown element or property, or a value the
/// property cannot take, is an error naming it.
fn apply_sets(pipeline: &gst::Pipeline, sets: &[PropertySet]) -> Result<()> {
    for set in sets {
        let targets: Vec<gst::Element> = pipeline
            .iterate_recurse()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.name() == set.element.as_str()
                    || e.factory()
                        .is_some_and(|f| f.name() == set.element.as_str())
            })
            .collect();
        if targets.is_empty() {
            bail!("--set: the pipeline has no element `{}`", set.element);
        }
        for e in targets {
            let pspec = e.find_property(&set.property).ok_or_else(|| {
                anyhow::anyhow!(
                    "--set: {} has no property `{}` (gst-inspect-1.0 {} lists them)",
                    e.name(),
                    set.property,
                    e.factory()
                        .map_or_else(|| e.name().to_string(), |f| f.name().to_string())
                )
            })?;
            let v = gst::glib::Value::deserialize_with_pspec(&set.value, &pspec).map_err(|_| {
                anyhow::anyhow!(
                    "--set: {}.{}: cannot take the value {:?} ({})",
                    e.name(),
                    set.property,
                    set.value,
                    pspec.value_type()
                )
            })?;
            let flags = pspec.flags();
            if !flags.contains(gst::glib::ParamFlags::WRITABLE)
                || flags.contains(gst::glib::ParamFlags::CONSTRUCT_ONLY)
            {
                bail!("--set: {}.{} cannot be set", e.name(), set.property);
            }
            if !in_range(&pspec, &v) {
                bail!(
                    "--set: {}.{}: {:?} is out of the property's range",
                    e.name(),
                    set.property,
                    set.value
                );
            }
            e.set_property_from_value(&set.property, &v);
        }
    }
    Ok(())
}

/// One `${NAME}` / `${NAME:-default}` variable of a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSpec {
    pub name: String,
    /// `None`: required.
    pub default: Option<String>,
    /// What the header says about it (may be empty).
    pub doc: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var {
        name: String,
        default: Option<String>,
        in_quotes: bool,
    },
}

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    pub path: PathBuf,
    /// The leading comment block, `#` stripped.
    pub header: Vec<String>,
    pub vars: Vec<VarSpec>,
    pieces: Vec<Piece>,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

impl PipelineFile {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pipeline file {}", path.display()))?;
        Self::parse(path, &text).with_context(|| format!("pipeline file {}", path.display()))
    }

    /// Parses the text of a pipeline file (`path` only names it).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut header = Vec::new();
        let mut in_header = true;
        let mut body = String::new();
        for line in text.lines() {
            let t = line.trim();
            if let Some(c) = t.strip_prefix('#') {
                if in_header {
                    header.push(c.strip_prefix(' ').unwrap_or(c).trim_end().to_owned());
                }
                continue;
            }
            if t.is_empty() {
                continue;
            }
            in_header = false;
            let t = t.strip_suffix('\\').unwrap_or(t).trim_end();
            if !body.is_empty() {
                body.push(' ');
            }
            body.push_str(t);
        }
        if body.is_empty() {
            bail!("no pipeline description (only comments or blank lines)");
        }

        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut in_quotes = false;
        let mut rest = body.as_str();
        while let Some(c) = rest.chars().next() {
            if c == '$' && rest[1..].starts_with('{') {
                let end = rest
                    .find('}')
                    .ok_or_else(|| anyhow!("unterminated `${{` in `{}`", excerpt(rest)))?;
                let inner = &rest[2..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d.to_owned())),
                    None => (inner, None),
                };
                if !is_name(name) {
                    bail!(
                        "bad placeholder `${{{inner}}}`: expected ${{NAME}} or ${{NAME:-default}} \
                         (NAME = letters, digits, _)"
                    );
                }
                if default.as_deref().is_some_and(|d| d.contains("${")) {
                    bail!("nested placeholder in `${{{inner}}}`");
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Var {
                    name: name.to_owned(),
                    default,
                    in_quotes,
                });
                rest = &rest[end + 1..];
                continue;
            }
            if c == '\\' {
                // Keep escapes as they are; an escaped quote does not toggle quoting.
                let n = rest[1..].chars().next().map_or(0, char::len_utf8);
                text.push_str(&rest[..1 + n]);
                rest = &rest[1 + n..];
                continue;
            }
            if c == '"' {
                in_quotes = !in_quotes;
            }
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }

        let mut vars: Vec<VarSpec> = Vec::new();
        for p in &pieces {
            if let Piece::Var { name, default, .. } = p {
                match vars.iter_mut().find(|v| &v.name == name) {
                    Some(v) => {
                        if v.default.is_none() {
                            v.default.clone_from(default);
                        }
                    }
                    None => vars.push(VarSpec {
                        name: name.clone(),
                        default: default.clone(),
                        doc: String::new(),
                    }),
                }
            }
        }
        for v in &mut vars {
            v.doc = header_doc(&header, &v.name);
        }
        Ok(Self {
            path: path.to_owned(),
            header,
            vars,
            pieces,
        })
    }

    /// Replaces the placeholders; `values` must name only variables of the file and give every
    /// variable without a default.
    pub fn substitute(&self, values: &BTreeMap<String, String>) -> Result<String> {
        let unknown: Vec<&str> = values
            .keys()
            .filter(|k| !self.vars.iter().any(|v| &v.name == *k))
            .map(String::as_str)
            .collect();
        let missing: Vec<&VarSpec> = self
            .vars
            .iter()
            .filter(|v| v.default.is_none() && !values.contains_key(&v.name))
            .collect();
        if !unknown.is_empty() || !missing.is_empty() {
            let mut msg = String::new();
            if !missing.is_empty() {
                let _ = write!(msg, "missing variable(s):");
                for v in &missing {
                    let _ = write!(msg, "\n  {}", v.name);
                    if !v.doc.is_empty() {
                        let _ = write!(msg, "  ({})", v.doc);
                    }
                }
            }
            if !unknown.is_empty() {
                if !msg.is_empty() {
                    msg.push('\n');
                }
                let _ = write!(msg, "unknown variable(s): {}", unknown.join(", "));
            }
            let names: Vec<&str> = self.vars.iter().map(|v| v.name.as_str()).collect();
            let _ = write!(
                msg,
                "\nthe file takes: {} (pass NAME=value; `ikol run --list-vars {}` explains them)",
                names.join(", "),
                self.path.display()
            );
            bail!(msg);
        }
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var {
                    name,
                    default,
                    in_quotes,
                } => {
                    let v = values
                        .get(name)
                        .or(default.as_ref())
                        .map(String::as_str)
                        .unwrap_or_default();
                    if v.contains("${") {
                        bail!("the value of {name} contains `${{`: {v:?}");
                    }
                    if *in_quotes {
                        out.push_str(&escape_quoted(v));
                    } else if v.chars().any(|c| c.is_whitespace() || c == '!' || c == '"') {
                        out.push('"');
                        out.push_str(&escape_quoted(v));
                        out.push('"');
                    } else {
                        out.push_str(v);
                    }
                }
            }
        }
        if let Some(i) = out.find("${") {
            bail!(
                "placeholder left after substitution: `{}`",
                excerpt(&out[i..])
            );
        }
        Ok(out)
    }

    /// The `--list-vars` text.
    pub fn describe_vars(&self) -> String {
        let mut s = format!("{}:\n", self.path.display());
        // The purpose: the header's first paragraph.
        for l in self.header.iter().take_while(|l| !l.trim().is_empty()) {
            let _ = writeln!(s, "  {l}");
        }
        s.push_str("variables:\n");
        let w = self.vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
        for v in &self.vars {
            let d = match &v.default {
                None => "required".to_owned(),
                Some(d) => format!("default {d:?}"),
            };
            let _ = writeln!(s, "  {:w$}  {:24} {}", v.name, d, v.doc);
        }
        if self.vars.is_empty() {
            s.push_str("  (none)\n");
        }
        // The example paragraph, if the header has one.
        if let Some(i) = self
            .header
            .iter()
            .position(|l| l.trim_start().to_ascii_lowercase().starts_with("example"))
        {
            for l in self.header[i..].iter().take_while(|l| !l.trim().is_empty()) {
                let _ = writeln!(s, "{l}");
            }
        }
        s
    }
}

fn excerpt(s: &str) -> String {
    s.chars().take(40).collect()
}

fn escape_quoted(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The header's words about `name`: the rest of the line that starts with it (optionally
/// followed by `:` or `=`), plus more deeply indented lines right after it.
fn header_doc(header: &[String], name: &str) -> String {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut doc: Vec<&str> = Vec::new();
    let mut it = header.iter();
    while let Some(line) = it.next() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix(name) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with([' ', '\t', ':', '='])) {
            continue;
        }
        doc.push(rest.trim_start_matches([':', '=']).trim());
        let base = indent(line);
        for next in it.by_ref() {
            if next.trim().is_empty() || indent(next) <= base {
                break;
            }
            doc.push(next.trim());
        }
        break;
    }
    doc.retain(|d| !d.is_empty());
    doc.join(" ")
}

/// Parses `NAME=value` arguments.
pub fn parse_assignments(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| anyhow!("expected NAME=value, got {a:?}"))?;
        if !is_name(k) {
            bail!("bad variable name {k:?} in {a:?}");
        }
        if m.insert(k.to_owned(), v.to_owned()).is_some() {
            bail!("variable {k} given twice");
        }
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Running

/// What the probe saw.
#[derive(Debug, Default, Clone)]
struct Counts {
    frames: u64,
    frames_with_people: u64,
    people: u64,
    track_ids: BTreeSet<u64>,
    meta_error: Option<String>,
    /// When the last frame was counted.
    last_frame: Option<Instant>,
}

impl Counts {
    fn add_buffer(&mut self, buf: &gst::BufferRef) {
        self.frames += 1;
        self.last_frame = Some(Instant::now());
        match gstikol::meta::FrameMeta::read(buf) {
            Ok(Some(m)) => {
                if !m.people.is_empty() {
                    self.frames_with_people += 1;
                }
                self.people += m.people.len() as u64;
                self.track_ids.extend(m.people.iter().map(|p| p.track_id));
            }
            Ok(None) => {}
            Err(e) => {
                if self.meta_error.is_none() {
                    self.meta_error = Some(e.to_string());
                }
            }
        }
    }
}

/// The totals printed at the end.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub frames: u64,
    pub frames_with_people: u64,
    pub people: u64,
    pub track_ids: usize,
    pub wall: Duration,
    pub attempts: u32,
    pub counted_at: String,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.wall.as_secs_f64();
        let fps = if secs > 0.0 {
            self.frames as f64 / secs
        } else {
            0.0
        };
        writeln!(f, "frames:             {}", self.frames)?;
        writeln!(f, "frames with people: {}", self.frames_with_people)?;
        writeln!(f, "people found:       {}", self.people)?;
        writeln!(f, "distinct track ids: {}", self.track_ids)?;
        writeln!(f, "wall time:          {secs:.2} s")?;
        writeln!(f, "fps:                {fps:.2}")?;
        if self.attempts > 1 {
            writeln!(f, "attempts:           {}", self.attempts)?;
        }
        write!(f, "counted at:         {}", self.counted_at)
    }
}

/// Number of interrupts (Ctrl-C) received so far; the first sends EOS, the second aborts.
pub static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Installs the Ctrl-C (SIGINT) handler that bumps [`INTERRUPTS`]. Returns whether it is
/// installed (it fails only if another handler was installed first).
fn install_interrupt_handler() -> bool {
    ctrlc::set_handler(|| {
        INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    })
    .is_ok()
}

/// Why an attempt ended.
#[derive(Debug)]
enum Outcome {
    /// End of stream (requested or not).
    Finished,
    /// A failure; `network` when it came from (or was announced by) a network source.
    Failed { message: String, network: bool },
    /// Second interrupt.
    Aborted,
}

/// Factory names of network sources whose failures `--reconnect` retries.
const NETWORK_SOURCES: &[&str] = &[
    "rtspsrc",
    "souphttpsrc",
    "curlhttpsrc",
    "udpsrc",
    "tcpclientsrc",
    "tcpserversrc",
    "srtsrc",
    "srtclientsrc",
    "rtmpsrc",
    "rtmp2src",
    "ristsrc",
    "webrtcsrc",
    "whepsrc",
    "rtpsrc",
    "hlsdemux",
    "dashdemux",
];

fn is_network_element(e: &gst::Element) -> bool {
    let Some(f) = e.factory() else {
        return false;
    };
    let name = f.name();
    NETWORK_SOURCES.contains(&name.as_str())
        || (e.element_flags().contains(gst::ElementFlags::SOURCE)
            && f.metadata(gst::ELEMENT_METADATA_KLASS)
                .is_some_and(|k| k.contains("Network")))
}

/// The network source that `obj` is or is inside of, if any.
fn network_source_of(obj: &gst::Object) -> Option<gst::Element> {
    let mut cur = Some(obj.clone());
    while let Some(o) = cur {
        if let Some(e) = o.downcast_ref::<gst::Element>()
            && is_network_element(e)
        {
            return Some(e.clone());
        }
        cur = o.parent();
    }
    None
}

/// Parses the description and returns the pipeline (a single element is wrapped in one).
fn build(file: &Path, description: &str) -> Result<gst::Pipeline> {
    let mut ctx = gst::ParseContext::new();
    let el = match gst::parse::launch_full(
        description,
        Some(&mut ctx),
        gst::ParseFlags::FATAL_ERRORS,
    ) {
        Ok(e) => e,
        Err(e) => {
            let missing = ctx.missing_elements();
            let mut msg = format!("{}: {}", file.display(), e.message());
            if !missing.is_empty() {
                let _ = write!(
                    msg,
                    "\nmissing element(s): {} (is the GStreamer plugin that provides them installed?)",
                    missing.join(", ")
                );
            }
            if let Some(values) = valid_values(e.message()) {
                let _ = write!(msg, "\nvalid values: {values}");
            }
            let _ = write!(msg, "\npipeline: {description}");
            bail!(msg);
        }
    };
    match el.downcast::<gst::Pipeline>() {
        Ok(p) => Ok(p),
        Err(el) => {
            let p = gst::Pipeline::new();
            p.add(&el)?;
            Ok(p)
        }
    }
}

/// For GStreamer's `could not set property "P" in element "E" to "V"`: the values an enum or
/// boolean property P takes (E's factory is its default name without the trailing number).
fn valid_values(message: &str) -> Option<String> {
    let rest = message.strip_prefix("could not set property \"")?;
    let (property, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(" in element \"")?;
    let (element, _) = rest.split_once('"')?;
    let factory = element.trim_end_matches(|c: char| c.is_ascii_digit());
    let e = gst::ElementFactory::make(factory).build().ok()?;
    let pspec = e.find_property(property)?;
    if let Some(en) = pspec.downcast_ref::<gst::glib::ParamSpecEnum>() {
        let class = en.enum_class();
        let nicks: Vec<&str> = class.values().iter().map(|v| v.nick()).collect();
        return Some(nicks.join(", "));
    }
    pspec
        .downcast_ref::<gst::glib::ParamSpecBoolean>()
        .map(|_| "true, false".to_owned())
}

/// The pad where frames are counted: the src pad of the most downstream `ikol*` element, else
/// the sink pad of the most downstream sink.
fn counting_pad(pipeline: &gst::Pipeline) -> Option<(gst::Pad, String)> {
    let sorted: Vec<gst::Element> = pipeline
        .iterate_sorted()
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let factory = |e: &gst::Element| e.factory().map(|f| f.name().to_string());
    if let Some(e) = sorted
        .iter()
        .find(|e| factory(e).is_some_and(|n| n.starts_with("ikol")))
    {
        let pad = e.static_pad("src").or_else(|| e.static_pad("sink"))?;
        return Some((pad.clone(), format!("{}:{}", e.name(), pad.name())));
    }
    let sink = sorted
        .iter()
        .find(|e| e.element_flags().contains(gst::ElementFlags::SINK))?;
    let pad = sink
        .static_pad("sink")
        .or_else(|| sink.sink_pads().first().cloned())?;
    Some((pad.clone(), format!("{}:{}", sink.name(), pad.name())))
}

/// Files written by elements (not sources) through a `location` property.
fn output_locations(pipeline: &gst::Pipeline) -> Vec<PathBuf> {
    pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.element_flags().contains(gst::ElementFlags::SOURCE))
        .filter(|e| {
            e.find_property("location")
                .is_some_and(|p| p.value_type() == String::static_type())
        })
        .filter_map(|e| e.property::<Option<String>>("location"))
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Renames `out.mp4` to `out.attemptK.mp4` so the next attempt does not overwrite it.
fn keep_outputs(files: &[PathBuf], attempt: u32, say: &dyn Fn(String)) {
    for f in files.iter().filter(|f| f.is_file()) {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned());
        let ext = f.extension().map(|s| s.to_string_lossy().into_owned());
        let name = match (stem, ext) {
            (Some(s), Some(e)) => format!("{s}.attempt{attempt}.{e}"),
            (Some(s), None) => format!("{s}.attempt{attempt}"),
            _ => continue,
        };
        let to = f.with_file_name(name);
        match std::fs::rename(f, &to) {
            Ok(()) => say(format!(
                "kept {} of attempt {attempt} as {}",
                f.display(),
                to.display()
            )),
            Err(e) => say(format!("could not keep {}: {e}", f.display())),
        }
    }
}

fn describe_error(err: &gst::message::Error) -> String {
    let path = err
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_else(|| "(unknown element)".into());
    let mut s = format!("{}\n  element: {path}", err.error());
    if let Some(d) = err.debug() {
        let _ = write!(s, "\n  debug: {d}");
    }
    s
}

fn describe_warning(w: &gst::message::Warning) -> String {
    let path = w
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_else(|| "(unknown element)".into());
    let mut s = format!("{} ({path})", w.error());
    if let Some(d) = w.debug() {
        let _ = write!(s, " [{d}]");
    }
    s
}

fn fmt_time(t: gst::ClockTime) -> String {
    let s = t.seconds();
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

struct Progress {
    bar: ProgressBar,
    with_duration: bool,
}

impl Progress {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Self {
            bar,
            with_duration: false,
        }
    }

    fn say(&self, s: &str) {
        self.bar.suspend(|| eprintln!("{s}"));
    }

    fn update(&mut self, pipeline: &gst::Pipeline, frames: u64, fps: f64) {
        let dur = pipeline.query_duration::<gst::ClockTime>();
        let pos = pipeline.query_position::<gst::ClockTime>();
        match (dur, pos) {
            (Some(d), Some(p)) if d > gst::ClockTime::ZERO => {
                if !self.with_duration {
                    self.with_duration = true;
                    self.bar.set_length(d.mseconds());
                    self.bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {bar:30} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                self.bar.set_position(p.mseconds().min(d.mseconds()));
                self.bar.set_message(format!(
                    "{} / {}  {frames} frames  {fps:.1} fps",
                    fmt_time(p),
                    fmt_time(d)
                ));
            }
            _ => self
                .bar
                .set_message(format!("{frames} frames  {fps:.1} fps")),
        }
        self.bar.tick();
    }
}

/// How long to wait for EOS after asking for it before giving up.
const EOS_GRACE: Duration = Duration::from_secs(15);

struct Attempt<'a> {
    sets: &'a [PropertySet],
    file: &'a Path,
    description: &'a str,
    deadline: Option<Instant>,
    counts: Arc<Mutex<Counts>>,
    progress: &'a mut Progress,
    started: Instant,
    interrupts_seen: &'a mut usize,
    /// Tables of `ikol-eval` messages whose element did not print them.
    tables: &'a mut Vec<String>,
    stall: Option<Duration>,
    stats: Option<&'a crate::stats::Stats>,
    /// Plays of the input (1 = once, 0 = forever).
    loops: u32,
}

/// Brings `pipeline` to PAUSED and seeks to its start with the SEGMENT flag (`--loop`).
fn preroll_for_loop(
    pipeline: &gst::Pipeline,
    bus: &gst::Bus,
    before_seek: impl FnOnce(),
) -> Result<()> {
    // Each play restarts the timestamps; a container muxer cannot take that (mp4mux writes
    // a file without playable streams), so refuse rather than write a broken file.
    if let Some(mux) = pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| {
            e.factory()
                .is_some_and(|f| f.metadata("klass").is_some_and(|k| k.contains("Muxer")))
        })
    {
        bail!(
            "{} cannot take a looped stream (each play restarts the timestamps); loop a \
             pipeline without a container muxer (JSON, fakesink)",
            mux.name()
        );
    }
    match pipeline.set_state(gst::State::Paused) {
        Ok(gst::StateChangeSuccess::NoPreroll) => bail!("live input cannot be looped"),
        Ok(_) => {}
        Err(_) => {
            let why = bus
                .pop_filtered(&[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(err) => Some(describe_error(err)),
                    _ => None,
                })
                .unwrap_or_else(|| "the pipeline did not start".into());
            bail!("{why}");
        }
    }
    let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(60));
    if res.is_err() {
        let why = bus
            .pop_filtered(&[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(err) => Some(describe_error(err)),
                _ => None,
            })
            .unwrap_or_else(|| "the pipeline did not preroll within 60 s".into());
        bail!("{why}");
    }
    // The preroll frame has been counted; the seek flushes it and it comes again, possibly
    // before `seek_simple` returns, so whatever restarts the counts must run now.
    before_seek();
    pipeline
        .seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT,
            gst::ClockTime::ZERO,
        )
        .map_err(|_| anyhow!("the input cannot seek (is it a file?)"))
}

/// Name of the message `ikolexport` posts for each motion file.
const TAKE_MESSAGE: &str = "ikol-take";

/// "wrote FILE (track N, F frames)" for an `ikol-take` message.
fn take_line(msg: &gst::message::Element) -> Option<String> {
    let s = msg.structure().filter(|s| s.name() == TAKE_MESSAGE)?;
    Some(format!(
        "wrote {} (track {}, {} frames)\n",
        s.get::<String>("location").ok()?,
        s.get::<u64>("track").ok()?,
        s.get::<u32>("frames").ok()?
    ))
}

/// Name of the message `ikoleval` posts at end of stream.
const EVAL_MESSAGE: &str = "ikol-eval";

/// The table of an `ikol-eval` message, unless its element printed it already (`print=true`).
fn eval_table(msg: &gst::message::Element) -> Option<String> {
    let s = msg.structure()?;
    if s.name() != EVAL_MESSAGE {
        return None;
    }
    let printed = msg
        .src()
        .and_then(|o| o.downcast_ref::<gst::Element>())
        .filter(|e| {
            e.find_property("print")
                .is_some_and(|p| p.value_type() == bool::static_type())
        })
        .is_some_and(|e| e.property::<bool>("print"));
    if printed {
        return None;
    }
    s.get::<String>("table").ok()
}

fn lock(c: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Attempt<'_> {
    /// Runs one pipeline from start to end; returns how it ended, where frames were counted
    /// and the files it writes.
    fn run(&mut self) -> Result<(Outcome, String, Vec<PathBuf>)> {
        let pipeline = build(self.file, self.description)?;
        apply_sets(&pipeline, self.sets)?;
        if let Some(st) = self.stats {
            st.attach(&pipeline);
        }
        let outputs = output_locations(&pipeline);
        let bus = pipeline.bus().context("pipeline without a bus")?;
        let counted_at = match counting_pad(&pipeline) {
            Some((pad, where_)) => {
                let counts = self.counts.clone();
                pad.add_probe(
                    gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                    move |_, info| {
                        let mut c = lock(&counts);
                        match &info.data {
                            Some(gst::PadProbeData::Buffer(b)) => c.add_buffer(b),
                            Some(gst::PadProbeData::BufferList(l)) => {
                                for b in l.iter() {
                                    c.add_buffer(b);
                                }
                            }
                            _ => {}
                        }
                        gst::PadProbeReturn::Ok
                    },
                );
                where_
            }
            None => "(nowhere: no ikol element and no sink)".to_owned(),
        };
        let outcome = self.play(&pipeline, &bus);
        let _ = pipeline.set_state(gst::State::Null);
        outcome.map(|o| (o, counted_at, outputs))
    }

    fn play(&mut self, pipeline: &gst::Pipeline, bus: &gst::Bus) -> Result<Outcome> {
        // Looping: preroll, then a flushing segment seek to the start, so the end of the input
        // posts SEGMENT_DONE (answered by the next, non-flushing, segment seek) instead of EOS.
        let mut plays_left = self.loops;
        if plays_left != 1 {
            // The preroll frame is flushed by the seek and comes again: counts restart first.
            let counts = &self.counts;
            if let Err(e) = preroll_for_loop(pipeline, bus, || *lock(counts) = Counts::default()) {
                return Ok(Outcome::Failed {
                    message: format!("--loop: {e:#}"),
                    network: false,
                });
            }
        }
        let started = pipeline.set_state(gst::State::Playing);
        let is_live = started == Ok(gst::StateChangeSuccess::NoPreroll);
        if let Err(e) = started {
            // The reason is the first error on the bus (later ones repeat it).
            let first = bus
                .pop_filtered(&[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(err) => Some((
                        describe_error(err),
                        err.src().and_then(network_source_of).is_some(),
                    )),
                    _ => None,
                });
            let (message, network) =
                first.unwrap_or_else(|| (format!("could not start the pipeline: {e}"), false));
            return Ok(Outcome::Failed { message, network });
        }
        let mut eos_requested: Option<(Instant, &'static str)> = None;
        let mut network_warning: Option<String> = None;
        // The stall watchdog: live or network input only (a file never stalls, it is slow).
        let watched = is_live
            || pipeline
                .iterate_recurse()
                .into_iter()
                .filter_map(Result::ok)
                .any(|e| is_network_element(&e));
        let playing_since = Instant::now();
        let mut stalled: Option<String> = None;
        let mut last_update = Instant::now() - Duration::from_secs(1);
        let mut buffering = false;
        loop {
            if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
                use gst::MessageView;
                match msg.view() {
                    MessageView::Eos(_) => {
                        // A stall stopped the stream: the files are finalised, the run failed.
                        if let Some(message) = stalled {
                            return Ok(Outcome::Failed {
                                message,
                                network: true,
                            });
                        }
                        if eos_requested.is_none()
                            && let Some(w) = network_warning
                        {
                            return Ok(Outcome::Failed {
                                message: format!("the network stream ended unexpectedly: {w}"),
                                network: true,
                            });
                        }
                        return Ok(Outcome::Finished);
                    }
                    MessageView::Error(err) => {
                        let text = describe_error(err);
                        if let Some((_, why)) = eos_requested {
                            self.progress.say(&format!(
                                "warning: error after stopping ({why}), ignored: {text}"
                            ));
                            return Ok(match stalled {
                                Some(message) => Outcome::Failed {
                                    message,
                                    network: true,
                                },
                                None => Outcome::Finished,
                            });
                        }
                        return Ok(Outcome::Failed {
                            message: text,
                            network: err.src().and_then(network_source_of).is_some(),
                        });
                    }
                    MessageView::Warning(w) => {
                        let text = describe_warning(w);
                        self.progress.say(&format!("warning: {text}"));
                        if w.src().and_then(network_source_of).is_some() {
                            network_warning = Some(text);
                        }
                    }
                    // Network buffering of a non-live stream: pause until the buffer is full.
                    MessageView::Buffering(b) if !is_live => {
                        let pct = b.percent();
                        if pct < 100 && !buffering {
                            buffering = true;
                            let _ = pipeline.set_state(gst::State::Paused);
                        } else if pct >= 100 && buffering {
                            buffering = false;
                            let _ = pipeline.set_state(gst::State::Playing);
                        }
                    }
                    MessageView::Element(e) => {
                        if let Some(t) = eval_table(e).or_else(|| take_line(e)) {
                            self.tables.push(t);
                        }
                    }
                    MessageView::Latency(_) => {
                        let _ = pipeline.recalculate_latency();
                    }
                    MessageView::SegmentDone(_) => {
                        plays_left = plays_left.saturating_sub(1);
                        let again = plays_left != 1 && eos_requested.is_none();
                        // The last play runs without the SEGMENT flag and ends in EOS.
                        let flags = if again {
                            gst::SeekFlags::SEGMENT
                        } else {
                            gst::SeekFlags::empty()
                        };
                        if pipeline.seek_simple(flags, gst::ClockTime::ZERO).is_err() {
                            pipeline.send_event(gst::event::Eos::new());
                        }
                    }
                    MessageView::ClockLost(_) => {
                        let _ = pipeline.set_state(gst::State::Paused);
                        let _ = pipeline.set_state(gst::State::Playing);
                    }
                    _ => {}
                }
            }

            let interrupts = INTERRUPTS.load(Ordering::SeqCst);
            if interrupts > *self.interrupts_seen {
                *self.interrupts_seen = interrupts;
                if eos_requested.is_some() {
                    self.progress.say("second interrupt: aborting");
                    return Ok(Outcome::Aborted);
                }
                self.progress
                    .say("interrupt: finishing the stream (press Ctrl-C again to abort)");
                pipeline.send_event(gst::event::Eos::new());
                eos_requested = Some((Instant::now(), "interrupt"));
            }
            if eos_requested.is_none()
                && let Some(d) = self.deadline
                && Instant::now() >= d
            {
                self.progress
                    .say("--max-seconds reached: finishing the stream");
                pipeline.send_event(gst::event::Eos::new());
                eos_requested = Some((Instant::now(), "--max-seconds"));
            }
            if eos_requested.is_none()
                && watched
                && !buffering
                && let Some(limit) = self.stall
            {
                let last = lock(&self.counts)
                    .last_frame
                    .filter(|t| *t > playing_since)
                    .unwrap_or(playing_since);
                if last.elapsed() > limit {
                    let message = format!(
                        "no frame for {:.1} s from the live/network input: the stream stalled \
                         (--stall-timeout)",
                        limit.as_secs_f64()
                    );
                    self.progress.say(&format!(
                        "warning: {message}; finishing the files written so far"
                    ));
                    pipeline.send_event(gst::event::Eos::new());
                    eos_requested = Some((Instant::now(), "stall"));
                    stalled = Some(message);
                }
            }
            if let Some((t, why)) = eos_requested
                && t.elapsed() > EOS_GRACE
            {
                if let Some(message) = stalled {
                    return Ok(Outcome::Failed {
                        message,
                        network: true,
                    });
                }
                return Ok(Outcome::Failed {
                    message: format!(
                        "no end of stream {} s after stopping ({why}); outputs may be incomplete",
                        EOS_GRACE.as_secs()
                    ),
                    network: false,
                });
            }
            if last_update.elapsed() >= Duration::from_millis(200) {
                last_update = Instant::now();
                if let Some(st) = self.stats {
                    st.sample_queues(pipeline);
                }
                let frames = lock(&self.counts).frames;
                let secs = self.started.elapsed().as_secs_f64();
                let fps = if secs > 0.0 {
                    frames as f64 / secs
                } else {
                    0.0
                };
                self.progress.update(pipeline, frames, fps);
            }
        }
    }
}

/// Writes to stdout; a closed stdout (`ikol run ... | head`) is not an error: the pipeline's
/// own files are what matters, and SIGPIPE stays ignored in the streaming commands.
pub fn say(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

/// The whole command: `--list-vars`, `--dry-run` or a run.
pub fn main(a: &RunArgs) -> Result<()> {
    let file = PipelineFile::read(&a.file)?;
    run_file(&file, a)
}

/// [`main`] for a pipeline file already read (or built into the binary); `a.file` is not used,
/// `file.path` names it in messages.
pub fn run_file(file: &PipelineFile, a: &RunArgs) -> Result<()> {
    let path = file.path.as_path();
    if a.list_vars {
        say(&file.describe_vars());
        return Ok(());
    }
    let values = parse_assignments(&a.vars)?;
    let sets = a
        .sets
        .iter()
        .map(|s| s.parse::<PropertySet>())
        .collect::<Result<Vec<_>>>()?;
    let description = file
        .substitute(&values)
        .with_context(|| format!("pipeline file {}", path.display()))?;
    if a.dry_run {
        say(&format!("{description}\n"));
        return Ok(());
    }
    if a.reconnect_delay.is_nan() || a.reconnect_delay < 0.0 {
        bail!("--reconnect-delay must be zero or more seconds");
    }
    let stall = match a.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT_S) {
        0.0 => None,
        s if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        s => bail!("--stall-timeout {s}: must be a positive number of seconds, or 0 (off)"),
    };
    let max = match a.max_seconds {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--max-seconds {s}: must be a positive number of seconds"),
        None => None,
    };

    gst::init().context("initialising GStreamer")?;
    gstikol::plugin_register_static().context("registering the ikol plugin")?;
    install_interrupt_handler();

    let started = Instant::now();
    let deadline = max.map(|m| started + m);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut progress = Progress::new();
    let mut interrupts_seen = INTERRUPTS.load(Ordering::SeqCst);
    let mut attempt = 1;
    let mut tables = Vec::new();
    let stats = a.stats.then(crate::stats::Stats::default);
    let (result, counted_at) = loop {
        let mut run = Attempt {
            sets: &sets,
            file: path,
            description: &description,
            deadline,
            counts: counts.clone(),
            progress: &mut progress,
            started,
            interrupts_seen: &mut interrupts_seen,
            tables: &mut tables,
            stall,
            stats: stats.as_ref(),
            loops: a.loops.unwrap_or(1),
        };
        let (outcome, counted_at, outputs) = run.run()?;
        match outcome {
            Outcome::Failed { message, network }
                if network
                    && attempt <= a.reconnect
                    && deadline.is_none_or(|d| Instant::now() < d) =>
            {
                progress.say(&format!(
                    "error from a network source (attempt {attempt} of {}): {message}\n\
                     reconnecting in {:.1} s",
                    a.reconnect + 1,
                    a.reconnect_delay
                ));
                let say = |s: String| progress.say(&s);
                keep_outputs(&outputs, attempt, &say);
                std::thread::sleep(Duration::from_secs_f64(a.reconnect_delay));
                attempt += 1;
                progress.say(&format!("reconnect: starting attempt {attempt}"));
            }
            Outcome::Failed { message, network } => {
                let gave_up = match (network, a.reconnect) {
                    (false, _) => String::new(),
                    (true, 0) => " (a network source: --reconnect N starts again)".to_owned(),
                    (true, _) => format!(" (gave up after {} reconnect(s))", attempt - 1),
                };
                break (
                    Err(anyhow!("{} failed{gave_up}: {message}", path.display())),
                    counted_at,
                );
            }
            Outcome::Aborted => {
                break (Err(anyhow!("aborted by a second interrupt")), counted_at);
            }
            Outcome::Finished => break (Ok(()), counted_at),
        }
    };
    progress.bar.finish_and_clear();
    let c = lock(&counts).clone();
    if let Some(e) = &c.meta_error {
        eprintln!("warning: unreadable frame meta: {e}");
    }
    let summary = Summary {
        frames: c.frames,
        frames_with_people: c.frames_with_people,
        people: c.people,
        track_ids: c.track_ids.len(),
        wall: started.elapsed(),
        attempts: attempt,
        counted_at,
    };
    say(&format!("{summary}\n"));
    if let Some(st) = &stats {
        say(&format!("\n{}", st.table(summary.wall.as_secs_f64())));
    }
    for t in &tables {
        say(&format!("\n{t}"));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# Test pipeline.
#
# Variables:
#   INPUT    the input file
#            (any container)
#   ROI      boxes x,y,w,h;... (default: none)
#   N        buffer count
#
# Example: ikol run t.pipeline INPUT=a.mp4
filesrc location=${INPUT} ! fakesink \\
  # a comment in the middle
  name=\"${ROI:-}\" num-buffers=${N:-10}
";

    fn vals(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parse_and_substitute() {
        let f = PipelineFile::parse(Path::new("t.pipeline"), FILE).unwrap();
        assert_eq!(f.header[0], "Test pipeline.");
        let names: Vec<_> = f.vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["INPUT", "ROI", "N"]);
        assert_eq!(f.vars[0].default, None);
        assert_eq!(f.vars[0].doc, "the input file (any container)");
        assert_eq!(f.vars[1].default.as_deref(), Some(""));
        assert_eq!(f.vars[2].default.as_deref(), Some("10"));
        assert_eq!(f.vars[2].doc, "buffer count");
        let s = f.substitute(&vals(&[("INPUT", "a.mp4")])).unwrap();
        assert_eq!(
            s,
            "filesrc location=a.mp4 ! fakesink name=\"\" num-buffers=10"
        );
        let s = f
            .substitute(&vals(&[
                ("INPUT", "my file.mp4"),
                ("ROI", "a\"b"),
                ("N", "3"),
            ]))
            .unwrap();
        assert_eq!(
            s,
            "filesrc location=\"my file.mp4\" ! fakesink name=\"a\\\"b\" num-buffers=3"
        );
        assert!(f.describe_vars().contains("INPUT"));
    }

    #[test]
    fn missing_unknown_and_leftovers_are_errors() {
        let f = PipelineFile::parse(Path::new("t.pipeline"), FILE).unwrap();
        let e = f
            .substitute(&vals(&[("FOO", "1"), ("BAR", "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing variable(s):\n  INPUT"), "{e}");
        assert!(e.contains("unknown variable(s): BAR, FOO"), "{e}");
        let e = f
            .substitute(&vals(&[("INPUT", "${X}")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("INPUT"), "{e}");
        let e = PipelineFile::parse(Path::new("t"), "fakesink name=${X")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unterminated"), "{e}");
        let e = PipelineFile::parse(Path::new("t"), "fakesink name=${1X}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad placeholder"), "{e}");
        assert!(PipelineFile::parse(Path::new("t"), "# only\n\n").is_err());
    }

    #[test]
    fn assignments() {
        let m = parse_assignments(&["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        assert_eq!(m["B"], "x=y");
        assert_eq!(m["C"], "");
        assert!(parse_assignments(&["A".into()]).is_err());
        assert!(parse_assignments(&["A=1".into(), "A=2".into()]).is_err());
    }
}
