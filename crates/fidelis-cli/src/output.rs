//! Where the CLI writes its files: under [`OUT_DIR`] (`fidelis-out/`, ignored by git) unless a
//! flag names another path, with missing folders created.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The folder that default output paths live in, relative to the working directory.
pub const OUT_DIR: &str = "fidelis-out";

/// `name` inside [`OUT_DIR`]: the default of an output flag.
pub fn default_path(name: &str) -> PathBuf {
    Path::new(OUT_DIR).join(name)
}

/// Writes `contents` to `path`, creating its parent folders first.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the folder {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Writes an SVG picture to `path`: as it is, or rasterised to PNG when `path` ends in `.png`
/// (see [`png_from_svg`]).
pub fn write_picture(path: &Path, svg: &str) -> Result<()> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        write(path, png_from_svg(svg)?)
    } else {
        write(path, svg)
    }
}

/// Pixels per SVG unit in PNG output: 2 gives about 190 dpi at the pictures' sizes, sharp in
/// print and on high-density screens.
pub const PNG_SCALE: f32 = 2.0;

/// Rasterises an SVG picture to PNG bytes with resvg, on white, at [`PNG_SCALE`]. Text is set
/// in the embedded DejaVu Sans (the `sans-serif` family, which every picture Fidelis draws
/// names last), so the output does not depend on the fonts installed.
pub fn png_from_svg(svg: &str) -> Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_font_data(dejavu::sans::regular().to_vec());
    fonts.load_font_data(dejavu::sans::bold().to_vec());
    fonts.set_sans_serif_family("DejaVu Sans");
    options.font_family = "DejaVu Sans".into();
    let tree = usvg::Tree::from_str(svg, &options).context("reading the SVG to rasterise")?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(PNG_SCALE)
        .context("the picture has no size")?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .context("the picture is too large to rasterise")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let scale = tiny_skia::Transform::from_scale(PNG_SCALE, PNG_SCALE);
    resvg::render(&tree, scale, &mut pixmap.as_mut());
    pixmap.encode_png().context("encoding the PNG")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dark pixels of a rasterised picture.
    fn dark_pixels(png: &[u8]) -> (u32, u32, usize) {
        let image = resvg::tiny_skia::Pixmap::decode_png(png).unwrap();
        let dark = image.pixels().iter().filter(|p| p.red() < 128).count();
        (image.width(), image.height(), dark)
    }

    #[test]
    fn png_text_is_set_in_the_embedded_font() {
        // Text alone: with no font found it would rasterise to a blank image.
        let text = |family: &str| {
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"120\" height=\"30\">\
                 <text x=\"4\" y=\"20\" font-family=\"{family}\" font-size=\"16\">IOI circuit</text></svg>"
            )
        };
        for family in [
            "sans-serif",
            "Helvetica, Arial, sans-serif",
            "NoSuchFont, sans-serif",
        ] {
            let (w, h, dark) = dark_pixels(&png_from_svg(&text(family)).unwrap());
            assert_eq!((w, h), (240, 60), "{family}: twice the SVG's size");
            assert!(
                dark > 200,
                "{family}: {dark} dark pixels; the text was not drawn"
            );
        }
        let blank = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>";
        assert_eq!(
            dark_pixels(&png_from_svg(blank).unwrap()).2,
            0,
            "white background"
        );
        assert!(png_from_svg("<svg").is_err());
    }

    #[test]
    fn writing_creates_missing_folders() {
        let dir = std::env::temp_dir().join(format!("fidelis-output-{}", std::process::id()));
        let path = dir.join("a/b/graph.json");
        write(&path, "{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        write(Path::new(&dir).join("top.txt").as_path(), "x").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            default_path("graph.json"),
            Path::new("fidelis-out/graph.json")
        );
    }
}
