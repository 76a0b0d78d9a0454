//! The wire between the host and the two interpreter roles of `harness.py`: frames and the
//! few plain-data values the host itself writes or reads.
//!
//! host → guest: `<kind> <seq> <length>\n<payload>`. guest → host: `\n<token> <kind> <seq>
//! <length>\n<payload>`; bytes around guest frames are the guest's own writes to fd 1
//! (kept, capped, for diagnostics). The token is random per instance; it does not protect
//! anything (the untrusted side may read it) — it only lets an honest solution's raw
//! writes to fd 1 pass without breaking the framing. What protects verdicts is that they
//! come only from the trusted instance's frames (see `judge.rs`).
//!
//! Values use `harness.py`'s tagged encoding (`n`, `t`, `f`, `i<hex>;`, `s<len>:`,
//! `b<len>:`, `u<n>:` …); the host needs only a strict subset: it builds the trusted
//! side's test frames and reads verdicts, captured output and exception names.

use rand::Rng;

/// The harness program. Instances load it marshalled (see [`BOOT`]); the first frame after
/// it says the role.
pub const HARNESS: &str = include_str!("harness.py");

/// The `-c` program of every instance: loads the harness from its first frame, either as
/// source to compile and send back marshalled ([`source_frame`], once per backend) or as
/// that marshalled code ([`code_frame`]), which spares each instance compiling it.
pub const BOOT: &str = include_str!("boot.py");

/// The bootstrap frame asking the interpreter to compile the harness and return it marshalled.
pub fn source_frame() -> Vec<u8> {
    source_frame_of(HARNESS)
}

/// The bootstrap frame asking the interpreter to compile `program` and return it
/// marshalled.
pub fn source_frame_of(program: &str) -> Vec<u8> {
    boot_frame(b'P', program.as_bytes())
}

/// The bootstrap frame carrying the marshalled harness.
pub fn code_frame(code: &[u8]) -> Vec<u8> {
    boot_frame(b'M', code)
}

fn boot_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![kind];
    frame.extend_from_slice(format!("{}\n", body.len()).as_bytes());
    frame.extend_from_slice(body);
    frame
}

/// A guest frame larger than this ends the instance as an output flood.
pub const FRAME_CAP: usize = 64 << 20;
/// Bytes a guest may write to fd 1 outside frames before it counts as an output flood.
pub const JUNK_CAP: usize = 4 << 20;
const JUNK_KEPT: usize = 4096;

/// Which part an interpreter instance plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs tests and decides verdicts; never executes solution code.
    Trusted,
    /// Executes the solution and answers requests.
    Untrusted,
}

/// What the harness inside an instance is told to do for its own confinement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestRules {
    /// Make itself not dumpable (`PR_SET_DUMPABLE` 0) before running anything of the job
    /// (execve makes every process dumpable again, so only the instance can say it).
    pub not_dumpable: bool,
    /// Install the Python audit hook that refuses OS access outside these extra roots (and
    /// the standard library and the working directory). Only where the kernel's isolation
    /// is unavailable and the user opted down: an audit hook is not a boundary.
    pub audit_roots: Option<Vec<String>>,
}

/// The job's code an untrusted instance is started with.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobCode<'a> {
    /// Trusted dataset code run before the solution.
    pub setup: &'a str,
    /// The solution.
    pub solution: &'a str,
}

/// The first frame an instance reads: its role, the token for its replies, its own
/// confinement, the output cap and (untrusted) the job's code (tagged encoding).
pub fn init_frame(
    role: Role,
    token: &str,
    rules: &GuestRules,
    output_cap: usize,
    code: JobCode<'_>,
) -> Vec<u8> {
    let mut flags = Vec::new();
    if rules.not_dumpable {
        flags.push("nodump");
    }
    if rules.audit_roots.is_some() {
        flags.push("audit");
    }
    let roots = rules.audit_roots.as_deref().unwrap_or(&[]).join("\0");
    let mut body = format!("{token}\n{}\n{roots}\n{output_cap}\n", flags.join(",")).into_bytes();
    Value::Seq(vec![
        Value::Bytes(code.setup.as_bytes().to_vec()),
        Value::Bytes(code.solution.as_bytes().to_vec()),
    ])
    .encode(&mut body);
    let kind = match role {
        Role::Trusted => b'T',
        Role::Untrusted => b'U',
    };
    host_frame(kind, 0, &body)
}

/// The frame that starts a job on a trusted instance (`J`): its setup code and entry
/// points.
pub fn job_frame(setup: &str, entry_points: &[String]) -> Vec<u8> {
    let mut payload = Vec::new();
    Value::Seq(vec![
        Value::Bytes(setup.as_bytes().to_vec()),
        Value::Seq(
            entry_points
                .iter()
                .map(|e| Value::Bytes(e.as_bytes().to_vec()))
                .collect(),
        ),
    ])
    .encode(&mut payload);
    host_frame(b'J', 0, &payload)
}

/// A host → guest frame.
pub fn host_frame(kind: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = format!("{} {seq} {}\n", kind as char, payload.len()).into_bytes();
    frame.extend_from_slice(payload);
    frame
}

/// A fresh 128-bit token in hex.
pub fn new_token() -> String {
    let mut rng = rand::rng();
    (0..4)
        .map(|_| format!("{:08x}", rng.random::<u32>()))
        .collect()
}

/// One guest → host frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is (`H` hello, `N` names, `V` value, `X` exception, `O` output, `C` request,
    /// `D` verdict, `S` syntax).
    pub kind: u8,
    /// The request it answers (guests echo the host's sequence number).
    pub seq: u64,
    /// The encoded body.
    pub payload: Vec<u8>,
}

/// What a [`FrameReader`] found wrong with a guest's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// A frame announced more than [`FRAME_CAP`] bytes.
    FrameTooLarge,
    /// More than [`JUNK_CAP`] bytes outside frames.
    TooMuchOutput,
}

/// Incremental parser of a guest's fd 1, fed as output arrives.
#[derive(Debug)]
pub struct FrameReader {
    prefix: Vec<u8>,
    buffer: Vec<u8>,
    /// Bytes seen outside frames (the first few KiB are kept in `junk`).
    pub junk_bytes: usize,
    /// The start of the guest's non-frame output, for diagnostics.
    pub junk: Vec<u8>,
}

impl FrameReader {
    /// A reader for frames carrying `token`.
    pub fn new(token: &str) -> Self {
        FrameReader {
            prefix: format!("\n{token} ").into_bytes(),
            buffer: Vec::new(),
            junk_bytes: 0,
            junk: Vec::new(),
        }
    }

    /// Appends output.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` when more output is needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Flood> {
        loop {
            let Some(at) = find(&self.buffer, &self.prefix) else {
                // Keep a tail that could be the start of a header.
                let keep = self.prefix.len().saturating_sub(1).min(self.buffer.len());
                let drop = self.buffer.len() - keep;
                self.skip(drop);
                return self.flood_check().map(|()| None);
            };
            self.skip(at);
            let header_start = self.prefix.len();
            let Some(line_end) = self.buffer[header_start..]
                .iter()
                .take(64)
                .position(|&b| b == b'\n')
            else {
                if self.buffer.len() - header_start >= 64 {
                    self.skip(1); // not a header after all
                    continue;
                }
                return Ok(None);
            };
            let header = &self.buffer[header_start..header_start + line_end];
            let Some((kind, seq, size)) = parse_header(header) else {
                self.skip(1);
                continue;
            };
            if size > FRAME_CAP {
                return Err(Flood::FrameTooLarge);
            }
            let body = header_start + line_end + 1;
            if self.buffer.len() < body + size {
                return Ok(None);
            }
            let payload = self.buffer[body..body + size].to_vec();
            self.buffer.drain(..body + size);
            return Ok(Some(Frame { kind, seq, payload }));
        }
    }

    fn skip(&mut self, n: usize) {
        let room = JUNK_KEPT.saturating_sub(self.junk.len()).min(n);
        self.junk.extend_from_slice(&self.buffer[..room]);
        self.junk_bytes += n;
        self.buffer.drain(..n);
    }

    fn flood_check(&self) -> Result<(), Flood> {
        if self.junk_bytes > JUNK_CAP {
            Err(Flood::TooMuchOutput)
        } else {
            Ok(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_header(header: &[u8]) -> Option<(u8, u64, usize)> {
    let text = std::str::from_utf8(header).ok()?;
    let mut parts = text.split(' ');
    let kind = parts.next().filter(|k| k.len() == 1)?.as_bytes()[0];
    let seq = parts.next()?.parse().ok()?;
    let size = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((kind, seq, size))
}

/// The plain-data values the host reads and writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int that fits 64 bits.
    Int(i64),
    /// A str.
    Str(String),
    /// A bytes object.
    Bytes(Vec<u8>),
    /// A tuple or a list.
    Seq(Vec<Value>),
}

impl Value {
    /// Appends the tagged encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::None => out.push(b'n'),
            Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Value::Int(i) => {
                let sign = if *i < 0 { "-" } else { "" };
                out.extend_from_slice(format!("i{sign}0x{:x};", i.unsigned_abs()).as_bytes());
            }
            Value::Str(s) => put_sized(out, b's', s.as_bytes()),
            Value::Bytes(b) => put_sized(out, b'b', b),
            Value::Seq(items) => {
                out.extend_from_slice(format!("u{}:", items.len()).as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// Decodes exactly one value of the subset (`None` for anything else or trailing bytes).
    pub fn decode(data: &[u8]) -> Option<Value> {
        let mut pos = 0;
        let value = decode_at(data, &mut pos, 0)?;
        (pos == data.len()).then_some(value)
    }

    /// The items of a tuple or list.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The text of a str.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes of a bytes object.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

fn put_sized(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(format!("{}:", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

fn decode_at(data: &[u8], pos: &mut usize, depth: usize) -> Option<Value> {
    if depth > 8 {
        return None;
    }
    let tag = *data.get(*pos)?;
    *pos += 1;
    let upto = |pos: &mut usize, sep: u8| -> Option<String> {
        let end = *pos + data.get(*pos..)?.iter().position(|&b| b == sep)?;
        let text = std::str::from_utf8(&data[*pos..end]).ok()?.to_string();
        *pos = end + 1;
        Some(text)
    };
    match tag {
        b'n' => Some(Value::None),
        b't' | b'f' => Some(Value::Bool(tag == b't')),
        b'i' => {
            let text = upto(pos, b';')?;
            let (negative, digits) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            let magnitude = i64::from_str_radix(digits.strip_prefix("0x")?, 16).ok()?;
            Some(Value::Int(if negative { -magnitude } else { magnitude }))
        }
        b's' | b'b' => {
            let size: usize = upto(pos, b':')?.parse().ok()?;
            let raw = data.get(*pos..pos.checked_add(size)?)?.to_vec();
            *pos += size;
            if tag == b's' {
                Some(Value::Str(String::from_utf8_lossy(&raw).into_owned()))
            } else {
                Some(Value::Bytes(raw))
            }
        }
        b'u' | b'l' => {
            let n: usize = upto(pos, b':')?.parse().ok()?;
            if n > data.len() {
                return None;
            }
            let items = (0..n)
                .map(|_| decode_at(data, pos, depth + 1))
                .collect::<Option<Vec<_>>>()?;
            Some(Value::Seq(items))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_frame(token: &str, kind: char, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut f = format!("\n{token} {kind} {seq} {}\n", payload.len()).into_bytes();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_are_found_between_junk_and_across_chunks() {
        let mut stream = b"hello from the solution\n".to_vec();
        stream.extend(guest_frame("tok", 'V', 3, b"i0x2;"));
        stream.extend(b"\ntok garbage header\n");
        stream.extend(guest_frame("tok", 'X', 4, b"with\nnewlines"));
        let mut reader = FrameReader::new("tok");
        let mut frames = Vec::new();
        for chunk in stream.chunks(5) {
            reader.feed(chunk);
            while let Some(f) = reader.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0].kind, frames[0].seq), (b'V', 3));
        assert_eq!(frames[0].payload, b"i0x2;");
        assert_eq!(frames[1].payload, b"with\nnewlines");
        assert!(String::from_utf8_lossy(&reader.junk).contains("hello from the solution"));
        let mut other = FrameReader::new("other");
        other.feed(&stream);
        assert_eq!(
            other.next_frame(),
            Ok(None),
            "another token's frames are junk"
        );
    }

    #[test]
    fn floods_are_reported() {
        let mut reader = FrameReader::new("tok");
        reader.feed(format!("\ntok V 1 {}\n", FRAME_CAP + 1).as_bytes());
        assert_eq!(reader.next_frame(), Err(Flood::FrameTooLarge));
        let mut reader = FrameReader::new("tok");
        reader.feed(&vec![b'x'; JUNK_CAP + 10]);
        assert_eq!(reader.next_frame(), Err(Flood::TooMuchOutput));
    }

    #[test]
    fn values_round_trip_and_reject_malformed_input() {
        let v = Value::Seq(vec![
            Value::Int(-255),
            Value::Int(i64::MAX),
            Value::Str("é\n".into()),
            Value::Bytes(vec![0, 255]),
            Value::Bool(true),
            Value::None,
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(Value::decode(&out), Some(v));
        for bad in [&b"i0x1"[..], b"s5:abc", b"u2:n", b"nn", b"q", b"i12;"] {
            assert_eq!(
                Value::decode(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tokens_are_fresh() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
