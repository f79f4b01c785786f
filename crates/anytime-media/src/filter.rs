//! Photo and video-frame filters, one engine for the CLI and the web client (wasm): an RGBA8
//! frame in, the filtered frame out, in place. Colour filters and the brightness, contrast and
//! saturation sliders fold into one 3 x 4 colour matrix in fixed point, applied in a single pass
//! whose loop body has no branches, so the compiler vectorises it (SIMD128 in the web build);
//! vignette, blur, sharpen and pixelate are passes of their own.
//!
//! Deterministic: the same frame, filter and settings give the same bytes on every platform
//! (integer arithmetic only), so a receiver can check a photo against the engine's output.

use serde::{Deserialize, Serialize};

/// A look to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    Original,
    Mono,
    Sepia,
    Vivid,
    Warm,
    Cool,
    Fade,
    Vignette,
    /// Box blur of this radius in pixels, three passes (close to a Gaussian).
    Blur(u8),
    Sharpen,
    /// Blocks of this many pixels a side.
    Pixelate(u8),
}

impl Filter {
    /// Every filter with its default setting, in the order a picker shows them.
    pub const ALL: [Filter; 11] = [
        Filter::Original,
        Filter::Mono,
        Filter::Sepia,
        Filter::Vivid,
        Filter::Warm,
        Filter::Cool,
        Filter::Fade,
        Filter::Vignette,
        Filter::Blur(4),
        Filter::Sharpen,
        Filter::Pixelate(12),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Filter::Original => "original",
            Filter::Mono => "mono",
            Filter::Sepia => "sepia",
            Filter::Vivid => "vivid",
            Filter::Warm => "warm",
            Filter::Cool => "cool",
            Filter::Fade => "fade",
            Filter::Vignette => "vignette",
            Filter::Blur(_) => "blur",
            Filter::Sharpen => "sharpen",
            Filter::Pixelate(_) => "pixelate",
        }
    }

    pub fn from_name(name: &str) -> Option<Filter> {
        Filter::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The sliders, each -100..=100 (0 = unchanged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjust {
    pub brightness: i8,
    pub contrast: i8,
    pub saturation: i8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a frame of {width} x {height} needs {needed} bytes of RGBA, not {got}")]
    WrongSize { width: u32, height: u32, needed: usize, got: usize },
}

/// Fixed point: 1.0 is `ONE`.
const SHIFT: i32 = 12;
const ONE: i32 = 1 << SHIFT;

/// out_c = (m[c][0] r + m[c][1] g + m[c][2] b) / ONE + m[c][3]
type Matrix = [[i32; 4]; 3];

const IDENTITY: Matrix = [[ONE, 0, 0, 0], [0, ONE, 0, 0], [0, 0, ONE, 0]];

fn f(x: f64) -> i32 {
    (x * f64::from(ONE)).round() as i32
}

/// Rec. 601 luma weights.
const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

fn saturation_matrix(s: f64) -> Matrix {
    let mut m = [[0; 4]; 3];
    for (row, out) in m.iter_mut().enumerate() {
        for col in 0..3 {
            let keep = if row == col { s } else { 0.0 };
            out[col] = f(LUMA[col] * (1.0 - s) + keep);
        }
    }
    m
}

fn scale_matrix(r: f64, g: f64, b: f64, offset: [i32; 3]) -> Matrix {
    [[f(r), 0, 0, offset[0]], [0, f(g), 0, offset[1]], [0, 0, f(b), offset[2]]]
}

/// `a` after `b`.
fn compose(a: &Matrix, b: &Matrix) -> Matrix {
    let mut m = [[0; 4]; 3];
    for row in 0..3 {
        for col in 0..3 {
            m[row][col] = (0..3).map(|k| a[row][k] * b[k][col]).sum::<i32>() >> SHIFT;
        }
        m[row][3] = ((0..3).map(|k| a[row][k] * b[k][3]).sum::<i32>() >> SHIFT) + a[row][3];
    }
    m
}

fn filter_matrix(filter: Filter) -> Matrix {
    match filter {
        Filter::Mono => saturation_matrix(0.0),
        Filter::Sepia => {
            [[f(0.393), f(0.769), f(0.189), 0], [f(0.349), f(0.686), f(0.168), 0], [f(0.272), f(0.534), f(0.131), 0]]
        }
        Filter::Vivid => compose(&saturation_matrix(1.45), &scale_matrix(1.06, 1.06, 1.06, [-6, -6, -6])),
        Filter::Warm => scale_matrix(1.10, 1.02, 0.88, [8, 2, -4]),
        Filter::Cool => scale_matrix(0.90, 1.0, 1.12, [-4, 2, 10]),
        // Lifted blacks, lowered whites, a little less colour.
        Filter::Fade => compose(&scale_matrix(0.80, 0.80, 0.80, [36, 36, 36]), &saturation_matrix(0.8)),
        _ => IDENTITY,
    }
}

fn adjust_matrix(adjust: Adjust) -> Matrix {
    let brightness = i32::from(adjust.brightness.clamp(-100, 100)) * 255 / 200;
    let contrast = 1.0 + f64::from(adjust.contrast.clamp(-100, 100)) / 100.0;
    let saturation = 1.0 + f64::from(adjust.saturation.clamp(-100, 100)) / 100.0;
    // Contrast pivots on mid-grey: c (x - 128) + 128 + brightness.
    let offset = (128.0 * (1.0 - contrast)).round() as i32 + brightness;
    compose(&scale_matrix(contrast, contrast, contrast, [offset; 3]), &saturation_matrix(saturation))
}

/// Applies `filter` and then the sliders to `rgba` (`width` x `height`, RGBA8, rows packed).
pub fn apply(rgba: &mut [u8], width: u32, height: u32, filter: Filter, adjust: Adjust) -> Result<(), FilterError> {
    let needed = width as usize * height as usize * 4;
    if rgba.len() != needed {
        return Err(FilterError::WrongSize { width, height, needed, got: rgba.len() });
    }
    let matrix = compose(&adjust_matrix(adjust), &filter_matrix(filter));
    if matrix != IDENTITY {
        apply_matrix(rgba, &matrix);
    }
    let (w, h) = (width as usize, height as usize);
    match filter {
        Filter::Vignette => vignette(rgba, w, h),
        Filter::Blur(radius) => {
            for _ in 0..3 {
                box_blur(rgba, w, h, usize::from(radius.max(1)));
            }
        }
        Filter::Sharpen => sharpen(rgba, w, h),
        Filter::Pixelate(size) => pixelate(rgba, w, h, usize::from(size.max(2))),
        _ => {}
    }
    Ok(())
}

fn clamp_u8(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

/// The hot loop: straight-line integer arithmetic on whole pixels (`[u8; 4]`, so no bounds
/// checks) and clamps that compile to min/max. (A table of products per coefficient measured
/// the same on this machine; BENCHMARKS.md.)
fn apply_matrix(rgba: &mut [u8], m: &Matrix) {
    let half = 1 << (SHIFT - 1);
    let [[m00, m01, m02, o0], [m10, m11, m12, o1], [m20, m21, m22, o2]] = *m;
    let (pixels, _) = rgba.as_chunks_mut::<4>();
    for px in pixels {
        let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
        px[0] = clamp_u8(((m00 * r + m01 * g + m02 * b + half) >> SHIFT) + o0);
        px[1] = clamp_u8(((m10 * r + m11 * g + m12 * b + half) >> SHIFT) + o1);
        px[2] = clamp_u8(((m20 * r + m21 * g + m22 * b + half) >> SHIFT) + o2);
    }
}

/// Darkens towards the corners: factor 1 inside 40 % of the half-diagonal, falling to 0.45 at
/// the corners (quadratic).
fn vignette(rgba: &mut [u8], w: usize, h: usize) {
    let (cx, cy) = (w as i64, h as i64); // centre, doubled, to stay in integers
    let max = cx * cx + cy * cy; // the corner, doubled
    let inner = max * 16 / 100; // 40 %, squared
    for y in 0..h {
        let dy = 2 * y as i64 + 1 - cy;
        let row = &mut rgba[y * w * 4..(y + 1) * w * 4];
        for (x, px) in row.chunks_exact_mut(4).enumerate() {
            let dx = 2 * x as i64 + 1 - cx;
            let d = dx * dx + dy * dy;
            let t = ((d - inner).max(0) * 1024 / (max - inner).max(1)).min(1024);
            let factor = 1024 - t * 563 / 1024; // 1.0 → 0.45
            for c in &mut px[..3] {
                *c = ((i64::from(*c) * factor) >> 10) as u8;
            }
        }
    }
}

/// One horizontal and one vertical box pass of `radius` (edges clamp), with running sums: the
/// cost does not grow with the radius, and both passes walk memory row by row.
fn box_blur(rgba: &mut [u8], w: usize, h: usize, radius: usize) {
    let mut line = vec![0u8; w * 4];
    for y in 0..h {
        let row = &mut rgba[y * w * 4..(y + 1) * w * 4];
        line.copy_from_slice(row);
        blur_row(&line, row, w, radius);
    }
    blur_columns(rgba, w, h, radius);
}

fn blur_row(src: &[u8], dst: &mut [u8], n: usize, radius: usize) {
    let window = (2 * radius + 1) as u32;
    let last = n - 1;
    let px = |i: usize| &src[i.min(last) * 4..i.min(last) * 4 + 3];
    let mut sum = [0u32; 3];
    for i in 0..=2 * radius {
        // Window of pixel 0: indices -radius..=radius, clamped.
        let p = px(i.saturating_sub(radius));
        for c in 0..3 {
            sum[c] += u32::from(p[c]);
        }
    }
    for i in 0..n {
        for c in 0..3 {
            dst[i * 4 + c] = ((sum[c] + window / 2) / window) as u8;
        }
        let (add, sub) = (px(i + radius + 1), px(i.saturating_sub(radius)));
        for c in 0..3 {
            sum[c] = sum[c] + u32::from(add[c]) - u32::from(sub[c]);
        }
    }
}

/// The vertical pass: a running sum per column, updated a row at a time.
fn blur_columns(rgba: &mut [u8], w: usize, h: usize, radius: usize) {
    let window = (2 * radius + 1) as u32;
    let stride = w * 4;
    let last = h - 1;
    let mut sums = vec![0u32; stride];
    for i in 0..=2 * radius {
        let y = i.saturating_sub(radius).min(last);
        for (sum, &v) in sums.iter_mut().zip(&rgba[y * stride..(y + 1) * stride]) {
            *sum += u32::from(v);
        }
    }
    // Rows are overwritten as the window passes them; the rows still needed are kept here.
    let keep = 2 * radius + 2;
    let mut ring: Vec<Vec<u8>> = (0..keep).map(|_| Vec::new()).collect();
    let original = |rgba: &[u8], ring: &[Vec<u8>], y: usize, upto: usize| -> Vec<u8> {
        if y < upto {
            ring[y % keep].clone()
        } else {
            rgba[y * stride..(y + 1) * stride].to_vec()
        }
    };
    for y in 0..h {
        ring[y % keep] = rgba[y * stride..(y + 1) * stride].to_vec();
        let out = &mut rgba[y * stride..(y + 1) * stride];
        for (x, (o, sum)) in out.iter_mut().zip(&sums).enumerate() {
            if x % 4 != 3 {
                *o = ((sum + window / 2) / window) as u8;
            }
        }
        let add = original(rgba, &ring, (y + radius + 1).min(last), y + 1);
        let sub = &ring[y.saturating_sub(radius) % keep];
        for ((sum, &a), &s) in sums.iter_mut().zip(&add).zip(sub) {
            *sum = *sum + u32::from(a) - u32::from(s);
        }
    }
}

/// Unsharp mask: the frame plus its difference from a radius-1 blur.
fn sharpen(rgba: &mut [u8], w: usize, h: usize) {
    let mut blurred = rgba.to_vec();
    box_blur(&mut blurred, w, h, 1);
    for (px, soft) in rgba.iter_mut().zip(&blurred) {
        let (p, s) = (i32::from(*px), i32::from(*soft));
        *px = clamp_u8(p + (p - s));
    }
    // The alpha channel is untouched by the blur, so the line above left it as it was.
}

/// Each `size` x `size` block becomes its average colour.
fn pixelate(rgba: &mut [u8], w: usize, h: usize, size: usize) {
    for by in (0..h).step_by(size) {
        for bx in (0..w).step_by(size) {
            let (ey, ex) = ((by + size).min(h), (bx + size).min(w));
            let mut sum = [0u32; 3];
            for y in by..ey {
                for x in bx..ex {
                    for c in 0..3 {
                        sum[c] += u32::from(rgba[(y * w + x) * 4 + c]);
                    }
                }
            }
            let n = ((ey - by) * (ex - bx)) as u32;
            let avg = sum.map(|s| ((s + n / 2) / n) as u8);
            for y in by..ey {
                for x in bx..ex {
                    rgba[(y * w + x) * 4..(y * w + x) * 4 + 3].copy_from_slice(&avg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32) -> Vec<u8> {
        (0..w * h).flat_map(|i| [(i * 7 % 256) as u8, (i * 13 % 256) as u8, (i * 29 % 256) as u8, 255]).collect()
    }

    fn pixel(rgba: &[u8], w: u32, x: u32, y: u32) -> [u8; 4] {
        let i = ((y * w + x) * 4) as usize;
        [rgba[i], rgba[i + 1], rgba[i + 2], rgba[i + 3]]
    }

    #[test]
    fn original_with_no_adjustment_changes_nothing_and_every_filter_keeps_alpha() {
        let before = frame(33, 17);
        let mut same = before.clone();
        apply(&mut same, 33, 17, Filter::Original, Adjust::default()).expect("apply");
        assert_eq!(same, before);
        for filter in Filter::ALL {
            let mut out = frame(33, 17);
            apply(&mut out, 33, 17, filter, Adjust { brightness: 10, contrast: -20, saturation: 30 }).expect("apply");
            assert!(out.chunks_exact(4).all(|p| p[3] == 255), "{filter:?} kept alpha");
            assert_eq!(Filter::from_name(filter.name()).map(|f| f.name()), Some(filter.name()));
        }
        let mut wrong = vec![0u8; 10];
        assert!(apply(&mut wrong, 2, 2, Filter::Mono, Adjust::default()).is_err());
    }

    #[test]
    fn each_filter_does_what_its_name_says() {
        let one = |rgb: [u8; 3], filter: Filter, adjust: Adjust| {
            let mut px = vec![rgb[0], rgb[1], rgb[2], 255];
            apply(&mut px, 1, 1, filter, adjust).expect("apply");
            [px[0], px[1], px[2]]
        };
        let none = Adjust::default();
        let [r, g, b] = one([200, 40, 90], Filter::Mono, none);
        assert!(r == g && g == b, "mono is grey: {r} {g} {b}");
        let [r, g, b] = one([128, 128, 128], Filter::Sepia, none);
        assert!(r > g && g > b, "sepia is brown: {r} {g} {b}");
        let [r, _, b] = one([128, 128, 128], Filter::Warm, none);
        assert!(r > b, "warm");
        let [r, _, b] = one([128, 128, 128], Filter::Cool, none);
        assert!(b > r, "cool");
        let [r, g, _] = one([180, 100, 100], Filter::Vivid, none);
        assert!(i32::from(r) - i32::from(g) > 80, "vivid is more saturated: {r} {g}");
        assert!(one([0, 0, 0], Filter::Fade, none)[0] > 20, "fade lifts blacks");
        assert!(one([128, 128, 128], Filter::Original, Adjust { brightness: 50, ..none })[0] > 150);
        assert!(one([200, 200, 200], Filter::Original, Adjust { contrast: 50, ..none })[0] > 220);
        let grey = one([200, 40, 90], Filter::Original, Adjust { saturation: -100, ..none });
        assert!(grey[0] == grey[1] && grey[1] == grey[2], "saturation -100 is mono");

        let mut v = vec![200u8; 64 * 64 * 4];
        apply(&mut v, 64, 64, Filter::Vignette, none).expect("apply");
        assert!(pixel(&v, 64, 0, 0)[0] < 100 && pixel(&v, 64, 32, 32)[0] == 200, "dark corners, bright centre");

        // A one-pixel white line: blur spreads it, sharpen steepens an edge, pixelate evens blocks.
        let mut line = vec![0u8; 21 * 21 * 4];
        for y in 0..21 {
            line[(y * 21 + 10) * 4..(y * 21 + 10) * 4 + 4].copy_from_slice(&[255, 255, 255, 255]);
        }
        let mut blurred = line.clone();
        apply(&mut blurred, 21, 21, Filter::Blur(2), none).expect("apply");
        assert!(pixel(&blurred, 21, 10, 10)[0] < 255 && pixel(&blurred, 21, 8, 10)[0] > 0);
        let mut edge: Vec<u8> =
            (0..16 * 4).flat_map(|i| if i % 16 < 8 { [60, 60, 60, 255] } else { [180, 180, 180, 255] }).collect();
        apply(&mut edge, 16, 4, Filter::Sharpen, none).expect("apply");
        assert!(pixel(&edge, 16, 7, 1)[0] < 60 && pixel(&edge, 16, 8, 1)[0] > 180, "overshoot at the edge");
        let mut blocks = frame(24, 24);
        apply(&mut blocks, 24, 24, Filter::Pixelate(12), none).expect("apply");
        assert_eq!(pixel(&blocks, 24, 0, 0), pixel(&blocks, 24, 11, 11));
        assert_eq!(pixel(&blocks, 24, 12, 12), pixel(&blocks, 24, 23, 23));
    }

    /// Box blur the slow, obvious way: each pixel the rounded mean of its clamped window.
    fn naive_box_blur(rgba: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
        let pass = |src: &[u8], horizontal: bool| -> Vec<u8> {
            let mut out = src.to_vec();
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        let mut sum = 0u32;
                        for d in -(r as isize)..=r as isize {
                            let (xx, yy) = if horizontal {
                                ((x as isize + d).clamp(0, w as isize - 1) as usize, y)
                            } else {
                                (x, (y as isize + d).clamp(0, h as isize - 1) as usize)
                            };
                            sum += u32::from(src[(yy * w + xx) * 4 + c]);
                        }
                        let n = (2 * r + 1) as u32;
                        out[(y * w + x) * 4 + c] = ((sum + n / 2) / n) as u8;
                    }
                }
            }
            out
        };
        pass(&pass(rgba, true), false)
    }

    #[test]
    fn the_fast_blur_equals_the_obvious_one() {
        for (w, h, r) in [(9, 7, 1), (9, 7, 2), (5, 3, 4), (1, 6, 2), (6, 1, 3)] {
            let input = frame(w, h);
            let mut fast = input.clone();
            box_blur(&mut fast, w as usize, h as usize, r);
            assert_eq!(fast, naive_box_blur(&input, w as usize, h as usize, r), "{w} x {h}, radius {r}");
        }
    }

    #[test]
    fn the_output_is_the_same_bytes_every_time() {
        let mut a = frame(40, 30);
        let mut b = frame(40, 30);
        let adjust = Adjust { brightness: -7, contrast: 33, saturation: -12 };
        apply(&mut a, 40, 30, Filter::Vivid, adjust).expect("apply");
        apply(&mut b, 40, 30, Filter::Vivid, adjust).expect("apply");
        assert_eq!(a, b);
        // A fixed pixel, so a change of the engine's arithmetic shows up here first.
        assert_eq!(pixel(&a, 40, 3, 2), [41, 16, 102, 255]);
    }
}
