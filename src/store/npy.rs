//! Writing results for other tools: NumPy `.npy` arrays and colour-mapped PNGs.

use std::path::Path;

/// Writes a C-order `.npy` (format 1.0) with the given dtype descriptor (`<f4`, `|u1`).
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let dims = match shape {
        [single] => format!("{single},"),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    // Whole or not at all: a full disk leaves no truncated or zero-byte array behind.
    crate::store::run::write_atomically(path, &bytes).map_err(|err| match err {
        crate::store::run::RunError::Write { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}

pub fn write_npy_f32(path: &Path, shape: &[usize], values: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(path, "<f4", shape, &bytes)
}

pub fn write_npy_u8(path: &Path, shape: &[usize], values: &[u8]) -> std::io::Result<()> {
    write_npy(path, "|u1", shape, values)
}

/// A C-order `.npy` array read back: its dtype descriptor, shape and raw little-endian bytes.
#[derive(Debug)]
pub struct NpyArray {
    pub descr: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl NpyArray {
    /// The values as f32: `<f4` as stored, `<f8` (numpy's default float) rounded.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match self.descr.as_str() {
            "<f4" => Some(
                self.data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            "<f8" => Some(
                self.data
                    .chunks_exact(8)
                    .map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// Reads a `.npy` file (format 1.x/2.x, C order); enough for our exports and test fixtures.
pub fn read_npy(path: &Path) -> std::io::Result<NpyArray> {
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let bytes = std::fs::read(path)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(invalid("not a .npy file"));
    }
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else if bytes.len() >= 12 {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    } else {
        return Err(invalid("truncated header"));
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| invalid("truncated header"))?;
    let field = |name: &str| -> Option<&str> {
        let rest = &header[header.find(&format!("'{name}':"))? + name.len() + 3..];
        Some(rest.trim_start())
    };
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(invalid("Fortran order is not supported"));
    }
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\''))
        .and_then(|v| v.split('\'').next())
        .ok_or_else(|| invalid("no descr"))?
        .to_string();
    let shape_text = field("shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| invalid("no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| invalid("bad shape")))
        .collect::<Result<Vec<_>, _>>()?;
    let data = bytes[start + header_len..].to_vec();
    let item = match descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        "|u1" | "<u1" | "|b1" => 1,
        other => return Err(invalid(&format!("dtype {other} is not supported"))),
    };
    if data.len() != shape.iter().product::<usize>() * item {
        return Err(invalid("data length does not match the shape"));
    }
    Ok(NpyArray { descr, shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_data_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write_npy_f32(&path, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(
            header.contains("'shape': (2, 3)") && header.ends_with('\n'),
            "{header}"
        );
        assert_eq!(bytes.len(), 10 + header_len + 24);
        assert_eq!(
            &bytes[10 + header_len..10 + header_len + 4],
            &1f32.to_le_bytes()
        );
    }

    #[test]
    fn npy_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        write_npy_u8(&path, &[2, 2], &[0, 1, 1, 0]).unwrap();
        let back = read_npy(&path).unwrap();
        assert_eq!(
            (back.descr.as_str(), back.shape.as_slice()),
            ("|u1", &[2, 2][..])
        );
        assert_eq!(back.data, vec![0, 1, 1, 0]);
        let path = dir.path().join("v.npy");
        write_npy_f32(&path, &[3], &[0.5, -1.0, 2.0]).unwrap();
        assert_eq!(
            read_npy(&path).unwrap().to_f32().unwrap(),
            vec![0.5, -1.0, 2.0]
        );
        // numpy's default float64, rounded to f32 (a probe saved without .astype).
        let doubles: Vec<u8> = [0.25f64, -3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write_npy(&path, "<f8", &[2], &doubles).unwrap();
        assert_eq!(read_npy(&path).unwrap().to_f32().unwrap(), vec![0.25, -3.0]);
        std::fs::write(&path, b"not numpy").unwrap();
        assert!(read_npy(&path).is_err());
    }
}
