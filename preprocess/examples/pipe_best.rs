use preba_preprocess::image::preprocess_image;
use preba_protocol::profile::ImageProfile;
use std::time::Instant;
fn main() {
    let files: Vec<Vec<u8>> = std::env::args().skip(1).map(|f| std::fs::read(f).unwrap()).collect();
    let p = ImageProfile::default();
    let mut best = f64::MAX;
    for _ in 0..300 {
        let t = Instant::now();
        for f in &files { std::hint::black_box(preprocess_image(f, &p).unwrap()); }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("best pass: {:.1} img/s ({:.3} ms/img)", files.len() as f64 / best, best * 1e3 / files.len() as f64);
}
