//! The `args` of an official DINO checkpoint: `main_dino.py` saves its argparse `Namespace`
//! in every checkpoint, and the Namespace says how the run was trained (architecture, patch
//! size, K, temperatures, crops). The torch pickle reader leaves Python objects it does not
//! know opaque, so the Namespace's fields are read here from `data.pkl`'s opcodes: a linear
//! walk that remembers memoised strings and numbers (the Namespace reuses keys the optimizer
//! state memoised earlier), then the Namespace's own `SETITEMS`. Nothing is executed; a
//! pickle laid out otherwise gives `None`, never a wrong value.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// A field's value, as far as the Namespace of `main_dino.py` needs.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A tuple or list of the above (`global_crops_scale=(0.4, 1.0)`).
    Seq(Vec<ArgValue>),
}

impl ArgValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ArgValue::Int(i) => Some(*i as f64),
            ArgValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_usize(&self) -> Option<usize> {
        match self {
            ArgValue::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            ArgValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A pair of numbers (`(0.4, 1.0)`).
    pub fn as_pair(&self) -> Option<(f64, f64)> {
        match self {
            ArgValue::Seq(items) if items.len() == 2 => {
                Some((items[0].as_f64()?, items[1].as_f64()?))
            }
            _ => None,
        }
    }
}

/// The Namespace's fields by name.
pub type OfficialArgs = HashMap<String, ArgValue>;

/// Where the pickle is read from: the first 16 MiB (the optimizer state before `args` grows
/// with the parameter count, not their size).
const READ_LIMIT: u64 = 16 << 20;

/// The `args` Namespace of a zip-format checkpoint (`torch.save` since 1.6); `None` when the
/// file has none or it is laid out in a way this reader does not follow.
pub fn read_official_args(path: &Path) -> Option<OfficialArgs> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(READ_LIMIT)
        .read_to_end(&mut head)
        .ok()?;
    // The first zip entry is data.pkl, stored uncompressed: its bytes start after the local
    // header (30 bytes, the name, the extra field).
    if head.get(..4)? != b"PK\x03\x04" {
        return None;
    }
    let u16_at = |at: usize| -> Option<usize> {
        Some(u16::from_le_bytes(head.get(at..at + 2)?.try_into().ok()?) as usize)
    };
    let start = 30 + u16_at(26)? + u16_at(28)?;
    namespace_of(head.get(start..)?)
}

/// Walks a pickle to the `argparse.Namespace` and reads its state.
pub fn namespace_of(pickle: &[u8]) -> Option<OfficialArgs> {
    let mut reader = Ops {
        bytes: pickle,
        at: 0,
    };
    let mut memo: HashMap<u32, ArgValue> = HashMap::new();
    let mut memo_count = 0u32;
    let mut last: Option<ArgValue> = None;
    loop {
        let op = reader.op()?;
        if let Op::Global(module, name) = &op {
            if module == "argparse" && name == "Namespace" {
                return namespace_state(&mut reader, &mut memo, &mut memo_count);
            }
        }
        match op {
            Op::Stop => return None,
            Op::Put(index) => {
                let index = index.unwrap_or(memo_count);
                memo_count = memo_count.max(index + 1);
                if let Some(value) = last.take() {
                    memo.insert(index, value);
                }
            }
            Op::Value(value) => last = Some(value),
            _ => last = None,
        }
    }
}

/// `) NEWOBJ [put] } [put] (MARK key value … SETITEMS)* BUILD`: the Namespace's dict.
fn namespace_state(
    reader: &mut Ops,
    memo: &mut HashMap<u32, ArgValue>,
    memo_count: &mut u32,
) -> Option<OfficialArgs> {
    // The memo index of a put, explicit or next in line (MEMOIZE).
    let put = |index: Option<u32>, count: &mut u32| {
        let index = index.unwrap_or(*count);
        *count = (*count).max(index + 1);
        index
    };
    let mut stack: Vec<Option<ArgValue>> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut args = OfficialArgs::new();
    loop {
        match reader.op()? {
            Op::Put(index) => {
                let index = put(index, memo_count);
                if let Some(Some(value)) = stack.last() {
                    memo.insert(index, value.clone());
                }
            }
            Op::Get(index) => stack.push(memo.get(&index).cloned()),
            Op::Value(value) => stack.push(Some(value)),
            Op::Mark => marks.push(stack.len()),
            Op::Tuple(Some(n)) => {
                let items = stack.split_off(stack.len().checked_sub(n)?);
                stack.push(
                    items
                        .into_iter()
                        .collect::<Option<Vec<_>>>()
                        .map(ArgValue::Seq),
                );
            }
            Op::Tuple(None) => {
                let items = stack.split_off(marks.pop()?);
                stack.push(
                    items
                        .into_iter()
                        .collect::<Option<Vec<_>>>()
                        .map(ArgValue::Seq),
                );
            }
            // The object and its (empty) state dict: placeholders on the stack.
            Op::Other(b')' | 0x81 | b'}') => stack.push(None),
            Op::Other(b']') => stack.push(Some(ArgValue::Seq(Vec::new()))),
            Op::Other(code @ (b'a' | b'e')) => {
                let items = match code {
                    b'a' => vec![stack.pop()?],
                    _ => stack.split_off(marks.pop()?),
                };
                let items: Option<Vec<ArgValue>> = items.into_iter().collect();
                match (stack.last_mut()?, items) {
                    (Some(ArgValue::Seq(list)), Some(items)) => list.extend(items),
                    (list, _) => *list = None,
                }
            }
            Op::Other(b'u') => {
                let items = stack.split_off(marks.pop()?);
                for pair in items.chunks(2) {
                    // A value this reader cannot represent is left out, not guessed.
                    if let [Some(ArgValue::Str(key)), Some(value)] = pair {
                        args.insert(key.clone(), value.clone());
                    }
                }
            }
            Op::Other(b's') => {
                let value = stack.pop()?;
                if let (Some(Some(ArgValue::Str(key))), Some(value)) = (stack.pop(), value) {
                    args.insert(key, value);
                }
            }
            Op::Other(b'b') => return Some(args),
            _ => return None,
        }
    }
}

/// One opcode, as much of it as the walk needs.
enum Op {
    Stop,
    Mark,
    Value(ArgValue),
    /// A memo put: explicit index, or `None` for MEMOIZE (the next index).
    Put(Option<u32>),
    Get(u32),
    /// TUPLE1/2/3 (`Some(n)`) or TUPLE to the mark (`None`).
    Tuple(Option<usize>),
    Global(String, String),
    /// Anything else: its code (arguments already skipped).
    Other(u8),
}

struct Ops<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Ops<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn uint(&mut self, n: usize) -> Option<u64> {
        let bytes = self.take(n)?;
        Some(bytes.iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b)))
    }

    fn line(&mut self) -> Option<String> {
        let rest = self.bytes.get(self.at..)?;
        let end = rest.iter().position(|b| *b == b'\n')?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Some(text)
    }

    fn text(&mut self, len_bytes: usize) -> Option<String> {
        let len = usize::try_from(self.uint(len_bytes)?).ok()?;
        Some(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn skip_sized(&mut self, len_bytes: usize) -> Option<()> {
        let len = usize::try_from(self.uint(len_bytes)?).ok()?;
        self.take(len).map(|_| ())
    }

    fn op(&mut self) -> Option<Op> {
        let code = *self.take(1)?.first()?;
        Some(match code {
            b'.' => Op::Stop,
            b'(' => Op::Mark,
            b'N' => Op::Value(ArgValue::None),
            0x88 => Op::Value(ArgValue::Bool(true)),
            0x89 => Op::Value(ArgValue::Bool(false)),
            b'K' => Op::Value(ArgValue::Int(self.uint(1)? as i64)),
            b'M' => Op::Value(ArgValue::Int(self.uint(2)? as i64)),
            b'J' => Op::Value(ArgValue::Int(i64::from(self.uint(4)? as u32 as i32))),
            b'G' => {
                let bytes: [u8; 8] = self.take(8)?.try_into().ok()?;
                Op::Value(ArgValue::Float(f64::from_be_bytes(bytes)))
            }
            b'X' => Op::Value(ArgValue::Str(self.text(4)?)),
            0x8c => Op::Value(ArgValue::Str(self.text(1)?)),
            0x8d => Op::Value(ArgValue::Str(self.text(8)?)),
            b'q' => Op::Put(Some(self.uint(1)? as u32)),
            b'r' => Op::Put(Some(self.uint(4)? as u32)),
            0x94 => Op::Put(None),
            b'h' => Op::Get(self.uint(1)? as u32),
            b'j' => Op::Get(self.uint(4)? as u32),
            b'p' => Op::Put(Some(self.line()?.trim().parse().ok()?)),
            b'g' => Op::Get(self.line()?.trim().parse().ok()?),
            0x85 => Op::Tuple(Some(1)),
            0x86 => Op::Tuple(Some(2)),
            0x87 => Op::Tuple(Some(3)),
            b't' => Op::Tuple(None),
            b'c' => Op::Global(self.line()?, self.line()?),
            b'i' => {
                self.line()?;
                self.line()?;
                Op::Other(code)
            }
            // Newline-terminated arguments.
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' => {
                self.line()?;
                Op::Other(code)
            }
            // Fixed-size arguments.
            0x80 | 0x82 => self.take(1).map(|_| Op::Other(code))?,
            0x83 => self.take(2).map(|_| Op::Other(code))?,
            0x84 => self.take(4).map(|_| Op::Other(code))?,
            0x95 => self.take(8).map(|_| Op::Other(code))?,
            // Length-prefixed data.
            b'U' | b'C' | 0x8a => self.skip_sized(1).map(|_| Op::Other(code))?,
            b'T' | b'B' | 0x8b => self.skip_sized(4).map(|_| Op::Other(code))?,
            0x8e | 0x96 => self.skip_sized(8).map(|_| Op::Other(code))?,
            // No argument.
            b')' | b']' | b'}' | b'a' | b'b' | b'd' | b'e' | b'l' | b'o' | b'Q' | b'R' | b's'
            | b'u' | b'0' | b'1' | b'2' | 0x81 | 0x8f | 0x90 | 0x91 | 0x92 | 0x93 | 0x97 | 0x98 => {
                Op::Other(code)
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Namespace as protocol 2 writes it, with a memoised key reused by `BINGET`.
    fn namespace_pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0];
        let key = |p: &mut Vec<u8>, s: &str| {
            p.push(b'X');
            p.extend((s.len() as u32).to_le_bytes());
            p.extend(s.as_bytes());
        };
        // Earlier in the file: 'teacher_temp' memoised at index 7.
        key(&mut p, "teacher_temp");
        p.extend([b'q', 7, b'0']);
        p.extend(b"cargparse\nNamespace\n");
        p.extend([b'q', 8, b')', 0x81, b'q', 9, b'}', b'q', 10, b'(']);
        key(&mut p, "arch");
        key(&mut p, "vit_small");
        key(&mut p, "patch_size");
        p.extend([b'K', 16]);
        p.extend([b'h', 7, b'G']);
        p.extend(0.07f64.to_be_bytes());
        key(&mut p, "global_crops_scale");
        p.push(b'G');
        p.extend(0.4f64.to_be_bytes());
        p.push(b'G');
        p.extend(1.0f64.to_be_bytes());
        p.extend([0x86, b'q', 11]);
        key(&mut p, "norm_last_layer");
        p.push(0x88);
        key(&mut p, "out_dim");
        p.push(b'J');
        p.extend(65536i32.to_le_bytes());
        key(&mut p, "gpus");
        p.extend([b']', b'(', b'K', 0, b'K', 1, b'e']);
        p.extend([b'u', b'b', b'.']);
        p
    }

    #[test]
    fn the_namespace_fields_are_read_with_memoised_keys() {
        let args = namespace_of(&namespace_pickle()).unwrap();
        assert_eq!(args["arch"].as_str(), Some("vit_small"));
        assert_eq!(args["patch_size"].as_usize(), Some(16));
        assert_eq!(args["teacher_temp"].as_f64(), Some(0.07));
        assert_eq!(args["global_crops_scale"].as_pair(), Some((0.4, 1.0)));
        assert_eq!(args["norm_last_layer"], ArgValue::Bool(true));
        assert_eq!(args["out_dim"].as_usize(), Some(65536));
        assert_eq!(
            args["gpus"],
            ArgValue::Seq(vec![ArgValue::Int(0), ArgValue::Int(1)])
        );
    }

    #[test]
    fn anything_else_is_none_not_a_guess() {
        assert_eq!(namespace_of(b"\x80\x02}q\x00."), None);
        let mut cut = namespace_pickle();
        cut.truncate(cut.len() - 20);
        assert_eq!(namespace_of(&cut), None);
        // An opcode the walk does not know ends it.
        assert_eq!(namespace_of(b"\x80\x02\xff"), None);
    }
}
