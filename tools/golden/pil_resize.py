#!/usr/bin/env python3
"""Writes tests/data/images/: small test images and what Pillow / transformers make of them.

Needs: pip install pillow numpy safetensors transformers   (versions are recorded in the output)

Files written (all deterministic for a given Pillow version):
  <name>.png/.jpg/.bmp       the input images (noise, gradients, odd sizes, grey, RGBA, palette,
                             16-bit PNGs, a 1x1, 4:2:0, 4:4:4 and progressive JPEGs)
  expected/<name>.pil.png    Pillow's decoding of the large JPEG (lossless), the resize input
  expected/<name>.<filter>_<W>x<H>.png   Pillow resizes at 224x224 of the large images (lossless PNG)
  expected.safetensors       U8 and F32 tensors:
     decoded/<name>              Image.open(f).convert("RGB") as [H, W, 3] (all but the large images)
     resized/<name>/<filter>/<W>x<H>   Image.resize((W, H), filter) of that, [H, W, 3]
                                 (bilinear at 32x32 and 45x19, the other filters at 45x19)
     pixel_values/<name>         ViTImageProcessorPil(size 32x32, mean = std = 0.5) output, [3, 32, 32]
     pixel_values_imagenet/<name>  the same with ImageNet mean/std
     level_map/default, level_map/imagenet   the processor applied to every uint8 level, [3, 256]
  README.md                  versions and how to regenerate

Pillow 13 changed the order of the two resampling passes for some sizes (see image.h). Run the
script with Pillow >= 13 first (everything above), then again in an environment with Pillow 12
(e.g. pip install pillow==12.3.0 numpy safetensors): that run only adds
  expected_pillow12.safetensors  the resized/... results that differ under Pillow 12

Usage: python3 tools/golden/pil_resize.py [--out DIR]
"""
import argparse
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image, features

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
LARGE = ("blocks_300x400.png", "photo_640x480.jpg")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def png16(path, array, colour_type):
    """A 16-bit PNG written by hand (Pillow cannot save 16-bit RGB). colour_type 0 = grey, 2 = RGB."""
    h, w = array.shape[:2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def synthetic_photo(w, h):
    """Smooth shapes, gradients and stripes (JPEG- and PNG-friendly)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)
    g = 255 * x / w
    b = 255 * (1 - y / h)
    for cx, cy, rad, col in [(200, 150, 90, (250, 40, 40)), (450, 300, 120, (30, 200, 90)), (320, 240, 40, (20, 20, 20))]:
        m = (x - cx) ** 2 + (y - cy) ** 2 < rad ** 2
        r[m], g[m], b[m] = col
    stripes = ((x // 8) % 2 == 0) & (y > 400)
    r[stripes] = 255
    img = np.stack([r, g, b], -1)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def make_inputs(out, rng):
    blocks = rng.integers(0, 256, (100, 75, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    blocks = np.clip(blocks.astype(int) + rng.integers(-1, 2, blocks.shape), 0, 255).astype(np.uint8)
    Image.fromarray(blocks, "RGB").save(os.path.join(out, "blocks_300x400.png"), optimize=True)
    Image.fromarray(rng.integers(0, 256, (23, 17, 3), dtype=np.uint8), "RGB").save(os.path.join(out, "noise_17x23.png"))
    Image.fromarray(synthetic_photo(640, 480), "RGB").save(os.path.join(out, "photo_640x480.jpg"), quality=90)
    Image.fromarray(rng.integers(0, 256, (29, 31, 3), dtype=np.uint8), "RGB").save(
        os.path.join(out, "small444_31x29.jpg"), quality=95, subsampling=0)
    grey = (np.add.outer(np.arange(47) * 5, np.arange(33) * 3) % 256).astype(np.uint8)
    Image.fromarray(grey, "L").save(os.path.join(out, "grey_33x47.png"))
    rgba = rng.integers(0, 256, (48, 64, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(os.path.join(out, "rgba_64x48.png"))
    pal = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB").quantize(colors=16)
    pal.save(os.path.join(out, "palette_40x30.png"))
    Image.fromarray(np.array([[[12, 200, 99]]], np.uint8), "RGB").save(os.path.join(out, "pixel_1x1.png"))
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), "RGB").save(os.path.join(out, "rgb_50x40.bmp"))
    png16(os.path.join(out, "grey16_20x10.png"), (np.arange(200).reshape(10, 20) * 331) % 65536, 0)
    png16(os.path.join(out, "rgb16_12x9.png"), rng.integers(0, 65536, (9, 12, 3)), 2)
    Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8), "RGB").save(
        os.path.join(out, "progressive_45x37.jpg"), quality=85, progressive=True)


def processor_outputs(images, mean, std):
    """pixel_values from transformers' PIL-backed ViT processor, checked against the numpy recipe."""
    from transformers import ViTImageProcessorPil

    proc = ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=mean, image_std=std)
    out = {}
    for name, im in images.items():
        pv = proc(images=im, return_tensors="np")["pixel_values"][0]
        small = np.array(im.resize((32, 32), Image.Resampling.BILINEAR)).astype(np.float64) * (1 / 255)
        manual = ((small.astype(np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)
        assert pv.dtype == np.float32 and np.array_equal(pv, manual), f"processor recipe changed for {name}"
        out[name] = pv
    levels = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, 2), "RGB")
    proc_full = ViTImageProcessorPil(do_resize=False, image_mean=mean, image_std=std)
    level_map = proc_full(images=levels, return_tensors="np")["pixel_values"][0][:, 0, :]  # [3, 256]
    return out, level_map


def legacy_main(out):
    """Pillow <= 12 (always horizontal pass first): writes expected_pillow12.safetensors with the
    resize results that differ from Pillow 13's expected.safetensors, for the same inputs."""
    from safetensors.numpy import load_file, save_file

    current = load_file(os.path.join(out, "expected.safetensors"))
    tensors = {}
    for key, want in current.items():
        if not key.startswith("resized/"):
            continue
        _, name, fname, size = key.split("/")
        w, h = map(int, size.split("x"))
        im = Image.open(os.path.join(out, name)).convert("RGB")
        got = np.array(im.resize((w, h), FILTERS[fname]))
        if not np.array_equal(got, want):
            tensors[key] = got
    assert tensors, "expected some results to depend on the Pillow version"
    save_file(tensors, os.path.join(out, "expected_pillow12.safetensors"),
              metadata={"generator": "tools/golden/pil_resize.py", "pillow": Image.__version__})
    print(f"wrote expected_pillow12.safetensors: {len(tensors)} of the resize results differ under Pillow "
          f"{Image.__version__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "images"))
    args = ap.parse_args()
    out = args.out
    if int(Image.__version__.split(".")[0]) < 13:
        legacy_main(out)
        return
    os.makedirs(os.path.join(out, "expected"), exist_ok=True)
    make_inputs(out, np.random.default_rng(2024))

    import transformers
    from safetensors.numpy import save_file

    tensors = {}
    decoded = {}
    for name in sorted(os.listdir(out)):
        if not name.endswith((".png", ".jpg", ".bmp")):
            continue
        im = Image.open(os.path.join(out, name)).convert("RGB")
        decoded[name] = im
        if name in LARGE:
            if name.endswith(".jpg"):
                im.save(os.path.join(out, "expected", name + ".pil.png"), optimize=True)
            im.resize((224, 224), Image.Resampling.BILINEAR).save(
                os.path.join(out, "expected", f"{name}.bilinear_224x224.png"), optimize=True)
        else:
            tensors[f"decoded/{name}"] = np.array(im)
        # Bilinear (ViT's filter) at two sizes, the other filters at the mixed up/down one.
        for fname, f in FILTERS.items():
            for w, h in [(32, 32), (45, 19)] if fname == "bilinear" else [(45, 19)]:
                tensors[f"resized/{name}/{fname}/{w}x{h}"] = np.array(im.resize((w, h), f))
    chosen = {n: decoded[n] for n in ("noise_17x23.png", "photo_640x480.jpg", "rgba_64x48.png", "grey_33x47.png")}
    pv, level_map = processor_outputs(chosen, [0.5] * 3, [0.5] * 3)
    tensors.update({f"pixel_values/{n}": v for n, v in pv.items()})
    tensors["level_map/default"] = level_map
    pv, level_map = processor_outputs({"noise_17x23.png": chosen["noise_17x23.png"]}, IMAGENET_MEAN, IMAGENET_STD)
    tensors.update({f"pixel_values_imagenet/{n}": v for n, v in pv.items()})
    tensors["level_map/imagenet"] = level_map
    versions = {"pillow": Image.__version__, "libjpeg": str(features.version("libjpeg_turbo") or features.version("jpg")), "numpy": np.__version__,
                "transformers": transformers.__version__}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(out, "expected.safetensors"),
              metadata={"generator": "tools/golden/pil_resize.py", **versions})
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(README.format(**versions))
    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(out) for n in ns)
    print(f"wrote {out}: {len(tensors)} tensors, {total} bytes in all")


README = """# Image test data

Written by `tools/golden/pil_resize.py` (run it to regenerate; the inputs are drawn from a seeded
numpy generator, so only a change of Pillow/libjpeg changes the expected files).

Versions: Pillow {pillow} (libjpeg-turbo {libjpeg}), numpy {numpy}, transformers {transformers}.

- Inputs: `*.png`, `*.jpg`, `*.bmp` (noise, blocks, a synthetic photo, grey, RGBA, palette,
  16-bit grey and RGB PNGs, a 1x1, baseline JPEGs with 4:2:0 and 4:4:4 chroma
  and a progressive JPEG).
- `expected.safetensors`: Pillow's `convert("RGB")` decodings, `Image.resize` results (bilinear at
  32x32 and 45x19, the other four Pillow filters at 45x19), `ViTImageProcessorPil` pixel_values at
  32x32 (mean/std 0.5 and ImageNet), and the processor's value for every uint8 level.
- `expected/*.png`: lossless copies of the large results (Pillow's JPEG decoding of the photo and
  the 224x224 bilinear resizes).

Pillow 13 changed the pass order of some resizes: `expected_pillow12.safetensors` holds the
results that differ under Pillow 12 (written by running the script again with Pillow 12).

Pillow opens a 16-bit grey PNG as mode I;16 and `convert("RGB")` clips values above 255 to 255;
16-bit RGB keeps the high byte. The C++ decoder reproduces both.
"""

if __name__ == "__main__":
    main()
