/**
 * Width, height and colour components of a JPEG from its frame header (SOFn), read by walking the marker segments
 * without decoding anything: what sharp's metadata() would answer, for a few microseconds instead of
 * a second trip through libvips per frame. Undefined when the bytes do not lead to a frame header
 * (not a JPEG, truncated before it, a DNL-defined height): the caller then asks sharp.
 */
export function jpegSize(body: Buffer): { width: number; height: number; components: number } | undefined {
  if (body.length < 4 || body[0] !== 0xff || body[1] !== 0xd8 || body[2] !== 0xff) return undefined;
  let at = 2;
  while (at + 4 <= body.length) {
    if (body[at] !== 0xff) return undefined;
    let marker = body[at + 1]!;
    // Any number of 0xFF fill bytes may precede a marker.
    while (marker === 0xff && at + 2 < body.length) marker = body[++at + 1]!;
    at += 2;
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue;
    if (marker === 0xd9 || marker === 0xda || at + 2 > body.length) return undefined;
    const length = body.readUInt16BE(at);
    if (length < 2) return undefined;
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof) {
      if (at + 8 > body.length) return undefined;
      const height = body.readUInt16BE(at + 3);
      const width = body.readUInt16BE(at + 5);
      // 1: grey; 3: YCbCr (or RGB); 4: CMYK or YCCK.
      const components = body[at + 7]!;
      return width && height ? { width, height, components } : undefined;
    }
    at += length;
  }
  return undefined;
}
