//! The page's files, embedded in the binary (no build step).

/// Every path a file is served at.
pub const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/app.js",
    "/style.css",
    "/manifest.webmanifest",
    "/sw.js",
    "/icon.svg",
    "/icon-192.png",
    "/icon-512.png",
    "/apple-touch-icon.png",
];

/// The media type and contents of the file at `path`.
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../assets/index.html"),
        ),
        "/app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../assets/app.js"),
        ),
        "/style.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../assets/style.css"),
        ),
        "/manifest.webmanifest" => (
            "application/manifest+json",
            include_bytes!("../assets/manifest.webmanifest"),
        ),
        "/sw.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../assets/sw.js"),
        ),
        "/icon.svg" => ("image/svg+xml", include_bytes!("../assets/icon.svg")),
        "/icon-192.png" => ("image/png", include_bytes!("../assets/icon-192.png")),
        "/icon-512.png" => ("image/png", include_bytes!("../assets/icon-512.png")),
        "/apple-touch-icon.png" => (
            "image/png",
            include_bytes!("../assets/apple-touch-icon.png"),
        ),
        _ => return None,
    })
}
