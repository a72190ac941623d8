import { assert, assertEquals } from "../lib/core/std.ts";
import {
  etaSeconds,
  formatDuration,
  formatNumber,
  formatProgress,
  formatRate,
  progress,
  type ProgressState,
} from "../lib/train/progress.ts";

Deno.test("formatDuration: seconds, minutes, hours, days, unknown", () => {
  assertEquals(
    [0, 9.4, 59.6, 60, 185, 3599, 3600, 3725, 86399, 90000, 200000].map(formatDuration),
    ["0s", "9s", "1m00s", "1m00s", "3m05s", "59m59s", "1h00m", "1h02m", "23h59m", "1d01h", "2d07h"],
  );
  assertEquals(formatDuration(NaN), "--");
  assertEquals(formatDuration(-1), "--");
  assertEquals(formatDuration(Infinity), "--");
});

Deno.test("formatNumber and formatRate keep metrics short and readable", () => {
  assertEquals(
    [0.512345, 1.5e-4, 12, 123456, 0, -0.25, NaN, Infinity, 3.14159e7, 1234.5678].map(formatNumber),
    ["0.5123", "1.50e-4", "12", "123456", "0", "-0.25", "NaN", "inf", "3.14e7", "1235"],
  );
  assertEquals(formatRate(2.3456), "2.35 it/s");
  assertEquals(formatRate(0.25), "4.0 s/it");
  assertEquals(formatRate(2, 16), "2.00 it/s 32.0 img/s");
  assertEquals(formatRate(250, 16), "250 it/s 4000 img/s");
  assertEquals(formatRate(0), "-- it/s");
});

const state: ProgressState = {
  label: "pretrain",
  step: 42,
  total: 150,
  elapsed: 21,
  stepsThisRun: 42,
  itemsPerStep: 16,
  metrics: { loss: 0.81234, vis: 0.7, mask: 0.91, lr: 0.00095 },
};

Deno.test("plain lines (not a terminal): count, percent, rate, ETA, elapsed, every metric", () => {
  assertEquals(
    formatProgress(state, { bar: false, width: 1000 }),
    "pretrain 42/150 (28%) 2.00 it/s 32.0 img/s ETA 54s elapsed 21s loss 0.8123 vis 0.7 mask 0.91 lr 9.50e-4",
  );
  // The last line says how long the job took instead of an ETA.
  assertEquals(
    formatProgress({ ...state, step: 150, elapsed: 75, stepsThisRun: 150, metrics: {} }, { bar: false }),
    "pretrain 150/150 (100%) 2.00 it/s 32.0 img/s in 1m15s",
  );
  // A resumed run measures its rate on the steps it did itself.
  const resumed = { ...state, step: 100, stepsThisRun: 10, elapsed: 5 };
  assertEquals(etaSeconds(resumed), 25);
  assert(Number.isNaN(etaSeconds({ ...state, stepsThisRun: 0 })));
});

Deno.test("bar lines fit the width: the bar stretches, then metrics drop from the end", () => {
  for (const width of [200, 120, 100, 80, 60, 40, 20]) {
    const line = formatProgress(state, { bar: true, width });
    assert(line.length <= width, `width ${width}: ${line.length} > ${width}: ${line}`);
    assert(line.startsWith("pretrain  42/150 ["), line);
  }
  assertEquals(
    formatProgress(state, { bar: true, width: 200 }),
    "pretrain  42/150 [########......................] 28% 2.00 it/s 32.0 img/s ETA 54s | loss 0.8123 vis 0.7 " +
      "mask 0.91 lr 9.50e-4",
  );
  const narrow = formatProgress(state, { bar: true, width: 80 });
  assert(narrow.includes("loss 0.8123") && !narrow.includes("lr 9.50e-4"), narrow);
  const tiny = formatProgress(state, { bar: true, width: 60 });
  assert(!tiny.includes("loss"), tiny);
});

Deno.test("progress: a terminal redraws in place; a log gets a line every logEvery steps and the last", () => {
  let clock = 0;
  const ttyOut: string[] = [];
  const tty = progress({
    label: "knn",
    total: 5,
    tty: true,
    write: (s) => ttyOut.push(s),
    columns: () => 80,
    now: () => clock,
    minRedrawMs: 100,
  });
  for (let step = 1; step <= 5; step++) {
    clock += 60;
    tty.update(step, { acc: step / 10 });
  }
  tty.log("checkpoint saved");
  tty.done();
  const text = ttyOut.join("");
  assert(ttyOut.slice(0, -1).every((s) => s.startsWith("\r")), JSON.stringify(ttyOut));
  // Redraws are throttled (steps 1 and 3 at 60 ms a step) but the last step is always drawn; then one
  // redraw after the log line and one at done.
  assertEquals(ttyOut.filter((s) => s.startsWith("\rknn")).length, 5);
  assert(text.includes("\r\x1b[Kcheckpoint saved\n"));
  assert(text.endsWith("\x1b[K\n"));
  for (const s of ttyOut) {
    for (const l of s.split("\n")) {
      assert(l.replaceAll("\r", "").replaceAll("\x1b[K", "").length <= 79);
    }
  }

  clock = 0;
  const logOut: string[] = [];
  const log = progress({
    label: "pretrain",
    total: 25,
    logEvery: 10,
    tty: false,
    write: (s) => logOut.push(s),
    now: () => clock,
  });
  for (let step = 1; step <= 25; step++) {
    clock += 500;
    log.update(step, { loss: 1 / step });
  }
  log.done();
  assertEquals(logOut.map((l) => l.split(" ")[1]), ["10/25", "20/25", "25/25"]);
  assert(logOut.every((l) => l.endsWith("\n") && !l.includes("\r")));
  assertEquals(logOut[0], "pretrain 10/25 (40%) 2.00 it/s ETA 8s elapsed 5s loss 0.1\n");
});
