/**
 * Decoding: the pixels Pillow gets (byte for byte), and a named refusal for every file that cannot be
 * used. The small reference files below were written by Pillow 9.4.0 (`Image.save`, JPEG quality 90) from
 * the pattern image of data_augment_test.ts, and `rgb` is Pillow's `np.asarray(Image.open(f).convert("RGB"))`
 * of each: libjpeg-turbo's decode, Pillow's CMYK->RGB, palette and grey expansion, alpha dropped.
 */
import { decodeImage, sniffFormat } from "../data/decode.ts";
import { E, encodeJpeg, encodePng } from "../lib/deps.ts";
import { assert, assertEquals, assertLess, assertStringIncludes } from "../lib/core/std.ts";

const PIL: Record<string, { w: number; h: number; bytes: string; rgb: string }> = {
  "cmyk.jpg": {
    w: 12,
    h: 8,
    bytes:
      "/9j/7gAOQWRvYmUAZAAAAAAA/9sAQwADAgIDAgIDAwMDBAMDBAUIBQUEBAUKBwcGCAwKDAwLCgsLDQ4SEA0OEQ4LCxAWEBETFBUVFQwPFxgWFBgSFBUU/8AAFAgACAAMBEMRAE0RAFkRAEsRAP/EAB8AAAEFAQEBAQEBAAAAAAAAAAABAgMEBQYHCAkKC//EALUQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJChYXGBkaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqio6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh4uPk5ebn6Onq8fLz9PX29/j5+v/aAA4EQwBNAFkASwAAPwCHwrrVroeq61Z3FpotoLDSIpSmjSxQb5riS3i+zWkkIjVUmhnjhYGYLHA+nlgJIvKrZvtf0vR4dI1+Dw5rdn4gK2qjw8mnpDp8DSTb2tA1tkuw8m1W3dNzqJ9LCMnzNNGRCmqWdzBqUV9e3hmg8NR3Nml+ug3fltE0NniKZbmWBbLYvlyOS8No6zIl3Isf6p10Hgv4pn4faDB4b8S/Crw94s1TTUjgkivF0wvpTeWhe1zO6vgyF7gJtXy/tXlbVMZFctZWWsg3FumkeJ9Ems5PsV1pvg/xNpmiw291Eqx3HnW96qSbnlSSSMqAgtpLVVCbTGnR/Dv426B8HbLU9C1HwP4o8eXBu1f+1tKutTnXCW8MARmWLbj9xuixkmBrdnLSM7Er/9k=",
    rgb:
      "ACJKj7PeE0aDvpfLFlozgsoO/0Evht3NKh93f3jU4T1GUb7G3+pda4iUwN1TfZLB6goxaozFk876SHarktYSVjaG2MME/1Wine/lTzxKqqwGHSIonbW41UxZgJS1zvcYQmOExOsQRney7CP8Pnu0ouspeGazpe1EPoeE7eDdQEelurMeNEBOydnyDSs9x9r3LE16qc/2MvgvaKTWG/43f76h7T0XeV+1DQBXUbCmswUJcomLnAUPJz2ty+H6Iztgh6nC/yRSgavoIFaIa6TeMApKnOLOHwdWsJ/68E4/T6isGxwcjJipuys3XXWLqyhBa5Ky4gk1aZljntEES4JbpOcoFFOfjt7FJHBlwroVHRd1f+Ho+v9qf4+fHyxGaoSf",
  },
  "gray.jpg": {
    w: 12,
    h: 8,
    bytes:
      "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/wAALCAAIAAwBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/ALsetafpEsGoLpNxbaolvD5el29tHHawSSyKDaxPAPmJVIEjZWJVZdNwVO7fU0DXbzw/ay6Zd+EdSkurNxbT2uiavY2CWk0aIkqPHc7Xy0ivKmAFEM0C4UqVX//Z",
    rgb:
      "Hx8fpqamQkJCqqqqPT09m5ubf39/v7+/LS0tf39/cXFxoqKi0dHRi4uLu7u7k5OTWVlZh4eHwMDAb29voqKiVlZWrKysiIiI0tLSREREm5ubISEhqqqqdHR0lpaWzs7OZmZmw8PDcXFxfHx8dnZ2wMDAbGxsy8vLd3d33t7eUFBQqqqqPDw8zs7OIyMj2dnZRkZGwsLCrq6unJycnZ2dsLCwb29vbGxsEhISl5eXPDw8hoaGNzc3QEBA4ODgMzMzoaGhZGRkq6urS0tLmJiYFRUVysrKFhYWrq6ufHx8j4+PGhoamJiYV1dXcHBwVVVVkJCQTExMhoaGqqqqbW1tv7+/SUlJwcHBWVlZsLCwHx8fwMDA6+vrj4+PLCwshoaG",
  },
  "rgb420.jpg": {
    w: 12,
    h: 8,
    bytes:
      "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAIAAwDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwC7HrWn6RLBqC6TcW2qJbw+XpdvbRx2sEksig2sTwD5iVSBI2ViVWXTcFTu31NA1288P2sumXfhHUpLqzcW09romr2NglpNGiJKjx3O18tIrypgBRDNAuFKlVKK82tmNTLKSxVGEXJtfFeSV4xeib/vNX3tZXtoRTqzwdF1ab1UnHXVW5pdOtuVb+b3tb//2Q==",
    rgb:
      "EiUhmayqN0ZLpK2sQT4ropuLg3yDv7zNKiw7iXp9mmNO2ZBvwNrNfJSHrcO2jJiKWlxHjYh1wcG1bnBtnKSnWlRWyaCesXdzueHGLlMxiqp7Fi0Bp6+adHhhlZ5xyNirW25YvMXKeGiNim6hYYF0q820V31OudqrbX9n2uTMT1gtpLOMLkQ3w9DhJBpO4cr/QkNit8TUk7yugKyRjKmNqraicm5tbGp4BBMwj5S6Si5en3OmPi9QOj9Vwe3sEUQzlKuRZGZZr6a7TkRplZO4FRAw2MDYKgofu6qjeX53bZ+WACoem5mKZlFMdmqAW05qooaSXUVDhoh6o7CcfGtRvsOtJlpOotDGY1ZNxqelJRkxx7nQ/97fp4h0JjQTcZZt",
  },
  "gray.png": {
    w: 5,
    h: 3,
    bytes:
      "iVBORw0KGgoAAAANSUhEUgAAAAUAAAADCAAAAAB+XZokAAAAGklEQVR4nGOQX+640p5x9gO3nDCma8rC4bYAOmAGFgTsBHUAAAAASUVORK5CYII=",
    rgb: "Hx8fp6enQUFBqampPz8/m5ube3t7wcHBLS0tg4ODcXFxnp6e1NTUhISEwMDA",
  },
  "pal.png": {
    w: 5,
    h: 3,
    bytes:
      "iVBORw0KGgoAAAANSUhEUgAAAAUAAAADCAMAAABs6DXKAAADAFBMVEUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAzAABmAACZAADMAAD/AAAAMwAzMwBmMwCZMwDMMwD/MwAAZgAzZgBmZgCZZgDMZgD/ZgAAmQAzmQBmmQCZmQDMmQD/mQAAzAAzzABmzACZzADMzAD/zAAA/wAz/wBm/wCZ/wDM/wD//wAAADMzADNmADOZADPMADP/ADMAMzMzMzNmMzOZMzPMMzP/MzMAZjMzZjNmZjOZZjPMZjP/ZjMAmTMzmTNmmTOZmTPMmTP/mTMAzDMzzDNmzDOZzDPMzDP/zDMA/zMz/zNm/zOZ/zPM/zP//zMAAGYzAGZmAGaZAGbMAGb/AGYAM2YzM2ZmM2aZM2bMM2b/M2YAZmYzZmZmZmaZZmbMZmb/ZmYAmWYzmWZmmWaZmWbMmWb/mWYAzGYzzGZmzGaZzGbMzGb/zGYA/2Yz/2Zm/2aZ/2bM/2b//2YAAJkzAJlmAJmZAJnMAJn/AJkAM5kzM5lmM5mZM5nMM5n/M5kAZpkzZplmZpmZZpnMZpn/ZpkAmZkzmZlmmZmZmZnMmZn/mZkAzJkzzJlmzJmZzJnMzJn/zJkA/5kz/5lm/5mZ/5nM/5n//5kAAMwzAMxmAMyZAMzMAMz/AMwAM8wzM8xmM8yZM8zMM8z/M8wAZswzZsxmZsyZZszMZsz/ZswAmcwzmcxmmcyZmczMmcz/mcwAzMwzzMxmzMyZzMzMzMz/zMwA/8wz/8xm/8yZ/8zM/8z//8wAAP8zAP9mAP+ZAP/MAP//AP8AM/8zM/9mM/+ZM//MM///M/8AZv8zZv9mZv+ZZv/MZv//Zv8Amf8zmf9mmf+Zmf/Mmf//mf8AzP8zzP9mzP+ZzP/MzP//zP8A//8z//9m//+Z///M//////8AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACP6ykAAAAGklEQVR4nGMwuRy3wYpBxXJr5AoGiy0lLXkAOwcGteuuySIAAAAASUVORK5CYII=",
    rgb: "ADMzmZn/AGZmzJnMAGYzZswA/zMzmczMMzNmZmbMzDMzZszMzP9mZmaZzMxm",
  },
  "graya.png": {
    w: 5,
    h: 3,
    bytes:
      "iVBORw0KGgoAAAANSUhEUgAAAAUAAAADCAQAAADxPw1zAAAAKklEQVR4nGOQ/7/8v+P/lf/t/zPO/v+AwY0hhyGMgekagzKDMEM4gy0DAAjMDBA7sr09AAAAAElFTkSuQmCC",
    rgb: "Hx8fp6enQUFBqampPz8/m5ube3t7wcHBLS0tg4ODcXFxnp6e1NTUhISEwMDA",
  },
};

const b64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

/** A smooth colourful test image as RGBA ImageData, and its RGB bytes. */
const testImage = (w: number, h: number) => {
  const rgba = new Uint8ClampedArray(w * h * 4);
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = [128 + 100 * Math.sin(x / 9), 128 + 100 * Math.cos(y / 7), (x * 3 + y * 2) % 256];
      for (let c = 0; c < 3; c++) {
        rgba[(y * w + x) * 4 + c] = v[c];
        rgb[(y * w + x) * 3 + c] = Math.round(Math.min(255, Math.max(0, v[c])));
      }
      rgba[(y * w + x) * 4 + 3] = 255;
    }
  }
  return { data: new ImageData(rgba, w, h), rgb };
};

const left = (r: E.Either<string, unknown>): string => {
  assert(E.isLeft(r), "expected the file to be refused");
  return r.left;
};

Deno.test("decodes JPEG (colour, grey, CMYK) and PNG (grey, palette, grey+alpha) to Pillow's RGB exactly", () => {
  for (const [name, f] of Object.entries(PIL)) {
    const r = decodeImage(b64(f.bytes), name);
    assert(E.isRight(r), `${name}: ${E.isLeft(r) ? r.left : ""}`);
    assertEquals([r.right.width, r.right.height], [f.w, f.h], name);
    const expected = b64(f.rgb);
    const worst = r.right.data.reduce((m, v, i) => Math.max(m, Math.abs(v - expected[i])), 0);
    // CMYK goes through jpeg-js, whose IDCT may differ from libjpeg's by one level.
    assert(worst <= (name === "cmyk.jpg" ? 1 : 0), `${name}: max difference ${worst}`);
  }
});

Deno.test("round trip through the package's own encoders: PNG exact, JPEG close", async () => {
  const { data, rgb } = testImage(40, 24);
  const png = new Uint8Array(await encodePng(data));
  const p = decodeImage(png, "t.png");
  assert(E.isRight(p));
  assertEquals(p.right.data, rgb);
  const jpg = new Uint8Array(await encodeJpeg(data, { quality: 95 }));
  const j = decodeImage(jpg, "t.jpg");
  assert(E.isRight(j));
  const mean = j.right.data.reduce((s, v, i) => s + Math.abs(v - rgb[i]), 0) / rgb.length;
  assertLess(mean, 3);
});

Deno.test("truncated, corrupt, empty and unsupported files are refused with their name and a reason", async () => {
  const { data } = testImage(64, 48);
  const jpg = new Uint8Array(await encodeJpeg(data, { quality: 90 }));
  const png = new Uint8Array(await encodePng(data));
  for (const cut of [jpg.length - 2, jpg.length >> 1, 100, 3]) {
    const msg = left(decodeImage(jpg.slice(0, cut), "cut.jpg"));
    assertStringIncludes(msg, "cut.jpg: truncated JPEG");
  }
  // A bad frame header (sample precision 7): libjpeg names the problem.
  const bad = jpg.slice();
  const sof = bad.findIndex((v, i) => v === 0xff && (bad[i + 1] === 0xc0 || bad[i + 1] === 0xc2));
  bad[sof + 4] = 7;
  assertStringIncludes(left(decodeImage(bad, "bad.jpg")), "bad.jpg: corrupt JPEG");
  for (const cut of [png.length - 6, png.length >> 1, 30]) {
    assertStringIncludes(left(decodeImage(png.slice(0, cut), "cut.png")), "cut.png: truncated PNG");
  }
  const flipped = png.slice();
  for (let i = 60; i < 80; i++) flipped[i] ^= 0xff;
  assertStringIncludes(left(decodeImage(flipped, "bits.png")), "bits.png: corrupt PNG");
  assertStringIncludes(left(decodeImage(new Uint8Array(0), "empty.jpg")), "empty.jpg: empty file");
  assertStringIncludes(
    left(decodeImage(new TextEncoder().encode("hello"), "a.txt")),
    "a.txt: not a JPEG or PNG",
  );
  assertStringIncludes(
    left(decodeImage(new TextEncoder().encode("GIF89a..."), "x.gif")),
    "GIF images are not supported",
  );
  // The decoder works on after failures.
  assert(E.isRight(decodeImage(jpg, "ok.jpg")));
});

Deno.test("formats are sniffed from the bytes, not the name", () => {
  assertEquals(sniffFormat(b64(PIL["gray.png"].bytes)), "png");
  assertEquals(sniffFormat(b64(PIL["gray.jpg"].bytes)), "jpeg");
  assert(E.isRight(decodeImage(b64(PIL["gray.png"].bytes), "misnamed.jpg")));
  assertEquals(sniffFormat(new TextEncoder().encode("RIFF\0\0\0\0WEBPVP8 ")), "webp");
});
