//! The icons as pixmaps (ARGB32, network byte order, as
//! StatusNotifierItem carries them), for tray hosts without the themed
//! icons: a filled key (connected), a hollow key (disconnected), an
//! amber key (waiting for a person), and a small green badge (a session
//! certificate is valid). Drawn here, so no image files ship.

use crate::model::Icon;

/// One pixmap: width, height, ARGB32 bytes (big-endian).
pub type Pixmap = (i32, i32, Vec<u8>);

/// The sizes drawn.
const SIZES: [u32; 3] = [16, 22, 32];

const GREY: [u8; 4] = [0xff, 0xd8, 0xd8, 0xd8];
const AMBER: [u8; 4] = [0xff, 0xf9, 0xa8, 0x25];
const GREEN: [u8; 4] = [0xff, 0x2e, 0xa0, 0x43];

/// Whether the point (x, y), in units of the icon's size, is on the key.
fn on_key(x: f32, y: f32) -> bool {
    let (dx, dy) = (x - 0.3, y - 0.5);
    let d2 = dx * dx + dy * dy;
    let bow = (0.09 * 0.09..=0.24 * 0.24).contains(&d2);
    let shaft = (0.45..=0.94).contains(&x) && (0.44..=0.56).contains(&y);
    let teeth =
        ((0.70..=0.77).contains(&x) || (0.85..=0.94).contains(&x)) && (0.56..=0.72).contains(&y);
    bow || shaft || teeth
}

fn draw(size: u32, color: [u8; 4], hollow: bool) -> Pixmap {
    let n = size as f32;
    let inside = |px: i64, py: i64| {
        px >= 0
            && py >= 0
            && px < size as i64
            && py < size as i64
            && on_key((px as f32 + 0.5) / n, (py as f32 + 0.5) / n)
    };
    let mut data = Vec::with_capacity((size * size * 4) as usize);
    for py in 0..size as i64 {
        for px in 0..size as i64 {
            let on = inside(px, py)
                && (!hollow
                    || [(1, 0), (-1, 0), (0, 1), (0, -1)]
                        .iter()
                        .any(|(dx, dy)| !inside(px + dx, py + dy)));
            data.extend_from_slice(if on { &color } else { &[0, 0, 0, 0] });
        }
    }
    (size as i32, size as i32, data)
}

/// The icon for `icon` at every size.
pub fn pixmaps(icon: Icon) -> Vec<Pixmap> {
    SIZES
        .iter()
        .map(|&s| draw(s, GREY, icon == Icon::Disconnected))
        .collect()
}

/// The attention icon (a request or a pairing waits for a person).
pub fn attention() -> Vec<Pixmap> {
    SIZES.iter().map(|&s| draw(s, AMBER, false)).collect()
}

/// The certificate badge: a dot in the lower right corner.
pub fn badge() -> Vec<Pixmap> {
    SIZES
        .iter()
        .map(|&size| {
            let n = size as f32;
            let mut data = Vec::with_capacity((size * size * 4) as usize);
            for py in 0..size {
                for px in 0..size {
                    let (x, y) = ((px as f32 + 0.5) / n - 0.8, (py as f32 + 0.5) / n - 0.8);
                    let on = x * x + y * y <= 0.18 * 0.18;
                    data.extend_from_slice(if on { &GREEN } else { &[0, 0, 0, 0] });
                }
            }
            (size as i32, size as i32, data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opaque(p: &Pixmap) -> usize {
        p.2.chunks(4).filter(|c| c[0] == 0xff).count()
    }

    #[test]
    fn the_hollow_key_has_fewer_pixels_than_the_filled_one() {
        for (filled, hollow) in pixmaps(Icon::Connected)
            .iter()
            .zip(&pixmaps(Icon::Disconnected))
        {
            assert_eq!(filled.2.len(), (filled.0 * filled.1 * 4) as usize);
            assert!(opaque(hollow) > 0 && opaque(hollow) < opaque(filled));
        }
        assert!(badge().iter().all(|b| opaque(b) > 0));
    }
}
