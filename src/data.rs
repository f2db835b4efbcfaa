// TEMPORARY STUB (replaced by the real module).
pub struct Sample {
    pub image: image::RgbImage,
    pub label: usize,
}
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("x {0}")]
    X(String),
}
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn class_names(&self) -> &[String];
    fn get(&self, index: usize) -> Result<Sample, DataError>;
    fn describe(&self) -> String;
}
pub struct SyntheticShapes {
    size: u32,
    n: usize,
    names: Vec<String>,
}
impl SyntheticShapes {
    pub fn new(_seed: u64, size: u32, n: usize) -> Self {
        Self {
            size,
            n,
            names: vec![],
        }
    }
}
impl Dataset for SyntheticShapes {
    fn len(&self) -> usize {
        self.n
    }
    fn class_names(&self) -> &[String] {
        &self.names
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        Ok(Sample {
            image: image::RgbImage::from_pixel(
                self.size,
                self.size,
                image::Rgb([(index % 255) as u8, 0, 0]),
            ),
            label: 0,
        })
    }
    fn describe(&self) -> String {
        "stub".into()
    }
}
pub struct ImageFolder;
impl ImageFolder {
    pub fn open(_root: &std::path::Path) -> Result<SyntheticShapes, DataError> {
        Err(DataError::X("stub".into()))
    }
}
