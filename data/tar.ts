/**
 * A streaming reader of tar archives (POSIX ustar, GNU long names, pax `path` records), for WebDataset
 * shards. Entries come out one at a time as the bytes arrive; nothing is written to disk, and member
 * names are only strings (sample keys and labels for messages), never used as filesystem paths.
 *
 * @module
 */

/** A regular file in the archive. */
export interface TarFile {
  readonly kind: "file";
  readonly name: string;
  readonly data: Uint8Array;
}

/** Something wrong with the archive; reading stops after it. */
export interface TarProblem {
  readonly kind: "problem";
  readonly message: string;
  /** The member being read when it happened, when its header was intact. */
  readonly name?: string;
}

/** Reads exactly n bytes at a time from a byte stream. */
const byteReader = (stream: ReadableStream<Uint8Array>) => {
  const reader = stream.getReader();
  let buf = new Uint8Array(0);
  let done = false;
  const fill = async (n: number) => {
    const parts: Uint8Array[] = [buf];
    let have = buf.length;
    while (have < n && !done) {
      const r = await reader.read();
      if (r.done) done = true;
      else {
        parts.push(r.value);
        have += r.value.length;
      }
    }
    if (parts.length > 1) {
      buf = new Uint8Array(have);
      let o = 0;
      for (const p of parts) {
        buf.set(p, o);
        o += p.length;
      }
    }
  };
  return {
    /** n bytes, or fewer if the stream ends first. */
    read: async (n: number): Promise<Uint8Array> => {
      if (buf.length < n) await fill(n);
      const out = buf.subarray(0, Math.min(n, buf.length));
      buf = buf.subarray(out.length);
      return out;
    },
    cancel: () => reader.cancel().catch(() => {}),
  };
};

const text = (b: Uint8Array) => {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
};

const octal = (b: Uint8Array): number => {
  // GNU base-256 for sizes >= 8 GiB: high bit of the first byte set.
  if (b[0] & 0x80) {
    let v = b[0] & 0x7f;
    for (let i = 1; i < b.length; i++) v = v * 256 + b[i];
    return v;
  }
  const s = text(b).trim();
  return s === "" ? 0 : parseInt(s, 8);
};

const checksumOk = (h: Uint8Array): boolean => {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
  return sum === octal(h.subarray(148, 156));
};

/** The `path` record of a pax extended header ("<len> path=<value>\n" records). */
const paxPath = (data: Uint8Array): string | undefined => {
  const s = new TextDecoder().decode(data);
  for (const line of s.split("\n")) {
    const m = /^\d+ path=(.*)$/.exec(line);
    if (m) return m[1];
  }
  return undefined;
};

/**
 * The regular files of a tar stream, in order. `label` (the shard's name) prefixes problem messages.
 * Stops at the end-of-archive block, at the end of the stream, or after the first problem (a bad header
 * checksum, a member cut short, a failed read), which it yields as a {@link TarProblem}.
 */
export async function* readTar(
  stream: ReadableStream<Uint8Array>,
  label: string,
): AsyncGenerator<TarFile | TarProblem> {
  const r = byteReader(stream);
  let longName: string | undefined;
  try {
    for (;;) {
      const h = await r.read(512);
      if (h.length === 0) return; // a stream without end blocks: tolerated, as GNU tar does
      if (h.length < 512) {
        yield {
          kind: "problem",
          message: `${label}: truncated tar (a header cut short); re-download the shard`,
        };
        return;
      }
      if (h.every((x) => x === 0)) return; // end of archive
      if (!checksumOk(h)) {
        yield {
          kind: "problem",
          message: `${label}: corrupt tar header (bad checksum); the rest of the shard is skipped`,
        };
        return;
      }
      const size = octal(h.subarray(124, 136));
      const type = String.fromCharCode(h[156]);
      const ustar = text(h.subarray(257, 263)).startsWith("ustar");
      const prefix = ustar ? text(h.subarray(345, 500)) : "";
      const base = text(h.subarray(0, 100));
      const name = longName ?? (prefix ? `${prefix}/${base}` : base);
      const data = await r.read(size);
      const padding = (512 - (size % 512)) % 512;
      if (data.length < size || (await r.read(padding)).length < padding) {
        const message = `${label}: truncated tar (member ${
          JSON.stringify(name)
        } cut short); re-download the shard`;
        yield { kind: "problem", message, name };
        return;
      }
      if (type === "L") {
        longName = text(data);
        continue;
      }
      if (type === "x") {
        longName = paxPath(data) ?? longName;
        continue;
      }
      longName = undefined;
      if (type === "0" || type === "\0" || type === "7") yield { kind: "file", name, data };
    }
  } catch (e) {
    // A read that fails (an I/O error, a path that turned out to be a directory: "Is a directory") ends the
    // shard like a cut-short one, named, instead of escaping without the shard's name.
    yield {
      kind: "problem",
      message: `${label}: cannot read the shard (${(e as Error).message}); the rest of it is skipped`,
    };
  } finally {
    await r.cancel();
  }
}
