//! The overhead chart: one panel per workload, one bar per configuration (overhead of the
//! median vs. no sensor), drawn into a PNG with a 5×7 bitmap font. No plotting library.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::{
    overhead::{Tool, Variant},
    png::{Image, Rgb},
};

const WIDTH: usize = 1600;
const HEIGHT: usize = 640;
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [20, 20, 20];
const GRID: Rgb = [225, 225, 225];
const AXIS: Rgb = [120, 120, 120];

fn color(tool: Tool, variant: Variant) -> Rgb {
    let tracked = variant == Variant::Tracked;
    match (tool, tracked) {
        (Tool::AgentSensor, false) => [140, 180, 230],
        (Tool::AgentSensor, true) => [31, 90, 180],
        (Tool::AgentSensorEveryOpen, _) => [15, 40, 90],
        (Tool::Bpftrace, false) => [250, 190, 120],
        (Tool::Bpftrace, true) => [225, 110, 20],
        (Tool::Auditd, false) => [200, 160, 200],
        (Tool::Auditd, true) => [120, 50, 130],
        (Tool::None, _) => [150, 150, 150],
    }
}

/// A panel: its title and its bars (tool, variant, overhead as a fraction).
pub type Panel = (String, Vec<(Tool, Variant, f64)>);
pub type Panels = [Panel];

pub fn write(path: &Path, title: &str, panels: &Panels) -> Result<()> {
    let image = draw(title, panels);
    std::fs::write(path, image.encode()).with_context(|| format!("cannot write {}", path.display()))
}

pub fn draw(title: &str, panels: &Panels) -> Image {
    let mut image = Image::new(WIDTH, HEIGHT, WHITE);
    text(&mut image, 30, 20, title, 3, BLACK);
    text(
        &mut image,
        30,
        52,
        "MEDIAN OF EACH CONFIGURATION VS. MEDIAN WITH NO SENSOR; EACH PANEL HAS ITS OWN SCALE",
        2,
        AXIS,
    );
    let (top, bottom) = (110i64, HEIGHT as i64 - 110);
    let left_margin = 30i64;
    let panel_width = (WIDTH as i64 - 2 * left_margin) / panels.len().max(1) as i64;
    for (p, (name, bars)) in panels.iter().enumerate() {
        let x0 = left_margin + p as i64 * panel_width;
        panel(&mut image, x0, top, panel_width - 20, bottom, name, bars);
    }
    // Legend, in rows.
    let mut x = left_margin;
    let mut y = HEIGHT as i64 - 70;
    for &(tool, variant) in &super::overhead::CONFIGS {
        let label = format!("{} {}", tool.name(), variant.name());
        let width = 26 + text_width(&label, 2) + 20;
        if x + width > WIDTH as i64 {
            x = left_margin;
            y += 30;
        }
        image.fill(x, y, x + 18, y + 18, color(tool, variant));
        text(&mut image, x + 26, y + 2, &label, 2, BLACK);
        x += width;
    }
    image
}

fn panel(
    image: &mut Image,
    x0: i64,
    top: i64,
    width: i64,
    bottom: i64,
    name: &str,
    bars: &[(Tool, Variant, f64)],
) {
    let values: Vec<f64> = bars.iter().map(|b| b.2 * 100.0).collect();
    let high = values.iter().copied().fold(1.0, f64::max);
    let low = values.iter().copied().fold(0.0, f64::min);
    let step = nice_step((high - low) / 4.0);
    // Room above the highest bar (and below the lowest) for its label.
    let margin = (high - low) * 0.08;
    let (low, high) = (if low < 0.0 { low - margin } else { 0.0 }, high + margin);
    let axis_x = x0 + 70;
    let plot_top = top + 30;
    let plot_bottom = bottom - 30;
    let y_of = |v: f64| {
        plot_bottom - ((v - low) / (high - low) * (plot_bottom - plot_top) as f64).round() as i64
    };
    text(image, x0 + 70, top, name, 2, BLACK);
    let mut tick = (low / step).ceil() * step;
    while tick <= high {
        let y = y_of(tick);
        image.fill(axis_x, y, x0 + width, y + 1, GRID);
        let label = format!("{}%", trim(tick));
        text(
            image,
            axis_x - 8 - text_width(&label, 1),
            y - 3,
            &label,
            1,
            AXIS,
        );
        tick += step;
    }
    let zero = y_of(0.0);
    image.fill(axis_x, zero, x0 + width, zero + 2, AXIS);
    image.fill(axis_x, plot_top, axis_x + 1, plot_bottom + 1, AXIS);
    if bars.is_empty() {
        return;
    }
    let slot = (width - 80) / bars.len() as i64;
    let bar_width = (slot * 7 / 10).max(4);
    for (i, (&(tool, variant, _), &value)) in bars.iter().zip(&values).enumerate() {
        let x = axis_x + 10 + i as i64 * slot;
        let y = y_of(value);
        let (y_a, y_b) = if y < zero { (y, zero) } else { (zero + 2, y) };
        image.fill(
            x,
            y_a,
            x + bar_width,
            y_b.max(y_a + 1),
            color(tool, variant),
        );
        let label = format!("{}{}%", if value >= 0.0 { "+" } else { "" }, short(value));
        let label_x = x + bar_width / 2 - text_width(&label, 1) / 2;
        let label_y = if value >= 0.0 { y - 12 } else { y + 4 };
        text(image, label_x, label_y, &label, 1, BLACK);
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(0.1);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// A percentage in at most about five characters.
fn short(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 6 * scale
}

/// Draws `s` (upper-cased: the font has capitals only) with its top-left corner at (x, y).
pub fn text(image: &mut Image, x: i64, y: i64, s: &str, scale: i64, color: Rgb) {
    for (i, c) in s.chars().enumerate() {
        let rows = glyph(c.to_ascii_uppercase());
        let gx = x + i as i64 * 6 * scale;
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    let (px, py) = (gx + col * scale, y + row as i64 * scale);
                    image.fill(px, py, px + scale, py + scale, color);
                }
            }
        }
    }
}

/// 5×7 glyphs, one byte per row, bit 4 the leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'B' => [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'D' => [0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'G' => [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
        'H' => [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'P' => [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
        'Q' => [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
        'X' => [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04],
        'Z' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0c, 0x0c],
        ',' => [0, 0, 0, 0, 0x0c, 0x04, 0x08],
        ';' => [0, 0x0c, 0x0c, 0, 0x0c, 0x04, 0x08],
        ':' => [0, 0x0c, 0x0c, 0, 0x0c, 0x0c, 0],
        '-' => [0, 0, 0, 0x1f, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1f, 0x04, 0x04, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1f],
        '=' => [0, 0, 0x1f, 0, 0x1f, 0, 0],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '*' => [0, 0x04, 0x15, 0x0e, 0x15, 0x04, 0],
        '\'' => [0x04, 0x04, 0x08, 0, 0, 0, 0],
        _ => [0x0e, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(12.0), 20.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(250.0), 500.0);
    }

    #[test]
    fn draws_bars_and_text() {
        let panels = vec![(
            "open/close".to_string(),
            vec![
                (Tool::AgentSensor, Variant::Untracked, 0.01),
                (Tool::AgentSensor, Variant::Tracked, 0.5),
                (Tool::Auditd, Variant::Tracked, -0.05),
            ],
        )];
        let image = draw("TEST", &panels);
        let tracked = color(Tool::AgentSensor, Variant::Tracked);
        let found = (0..image.height)
            .flat_map(|y| (0..image.width).map(move |x| (x, y)))
            .any(|(x, y)| image.get(x, y) == tracked);
        assert!(found, "the tracked bar is drawn");
    }
}
