#!/usr/bin/env python3
"""Pillow's results for image edge cases that tests/data/images/'s main script (pil_resize.py) does
not cover, written to tests/data/images/expected/:

  hamming_noise_145x59_to_141x58.png   Pillow's Hamming resize of a 145x59 noise image whose byte i
                                       is (i * 2654435761 mod 2^32) >> 24 (the C++ test builds the
                                       same image): a case where computing Pillow's window with
                                       double constants instead of its float ones (0.54f, 0.46f)
                                       moves 18 bytes by one level
  topdown_29x37.bmp                    a 24-bit BMP stored top-down (negative height)
  topdown_29x37.rgb.png                what Pillow decodes it to (convert("RGB"))
  noise422_33x20.jpg                   a 4:2:2 JPEG (chroma halved horizontally only) of noise, odd width
  noise422_33x20.rgb.png               what Pillow (libjpeg-turbo) decodes it to

Usage: python3 tools/golden/pil_edge_cases.py [--out tests/data/images/expected]   (Pillow >= 13)
"""
import argparse
import os
import struct

import PIL
from PIL import Image


def noise(w, h):
    return bytes(((i * 2654435761) & 0xFFFFFFFF) >> 24 for i in range(w * h * 3))


def topdown_bmp(w, h):
    """A 24-bit BMP of a gradient, rows stored top to bottom (biHeight = -h)."""
    row = (w * 3 + 3) // 4 * 4
    pixels = bytearray()
    for y in range(h):
        line = bytearray()
        for x in range(w):
            line += bytes(((x * 9 + y) & 255, (y * 7) & 255, (x * y) & 255))  # B, G, R
        pixels += line + bytes(row - len(line))
    header = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    file_header = struct.pack("<2sIHHI", b"BM", 14 + len(header) + len(pixels), 0, 0, 14 + len(header))
    return file_header + header + bytes(pixels)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tests/data/images/expected")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    im = Image.frombytes("RGB", (145, 59), noise(145, 59))
    im.resize((141, 58), Image.HAMMING).save(os.path.join(args.out, "hamming_noise_145x59_to_141x58.png"))
    bmp = os.path.join(args.out, "topdown_29x37.bmp")
    with open(bmp, "wb") as f:
        f.write(topdown_bmp(29, 37))
    Image.open(bmp).convert("RGB").save(os.path.join(args.out, "topdown_29x37.rgb.png"))
    jpg = os.path.join(args.out, "noise422_33x20.jpg")
    Image.frombytes("RGB", (33, 20), noise(33, 20)).save(jpg, quality=95, subsampling=1)
    Image.open(jpg).convert("RGB").save(os.path.join(args.out, "noise422_33x20.rgb.png"))
    print(f"written with Pillow {PIL.__version__}")


if __name__ == "__main__":
    main()
