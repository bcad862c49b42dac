// Drives headless Chromium (Debian's /usr/bin/chromium, through playwright-core)
// over iocomp's live status page while downloads run; run by
// crates/iocomp-cli/tests/cli/browser.rs.
//
//   node status.mjs URL SHOT1 SHOT2 COUNT
//
// URL: the status page (the metrics listener's `/`). It waits until COUNT
// transfers are listed, reads the table from the DOM and takes SHOT1, waits
// until every row's bytes-sent value has changed (the page polls
// /status.json by itself; the script never reloads it), reads the table again
// and takes SHOT2. It prints one JSON summary on stdout ({first, second,
// error, ...}; also when something throws) and exits 0 when it got both
// readings, 1 otherwise; the Rust test asserts on the readings.

import { executablePath, launch } from "./launch.mjs";

const [url, shot1, shot2, countArg] = process.argv.slice(2);
if (!url || !shot1 || !shot2 || !countArg) {
  console.error("usage: node status.mjs URL SHOT1 SHOT2 COUNT");
  process.exit(2);
}
const count = Number(countArg);
const origin = new URL(url).origin;
const summary = {
  url,
  browserVersion: null,
  title: null,
  first: null,
  second: null,
  foreignRequests: [],
  pageErrors: [],
  error: null,
};

// The table as the page shows it.
const read = (page) =>
  page.$$eval("#rows tr", (trs) =>
    trs.map((tr) => ({
      client: tr.querySelector(".client").textContent,
      file: tr.querySelector(".file").textContent,
      sent: Number(tr.querySelector(".sent").dataset.bytes),
      sentText: tr.querySelector(".sent").textContent,
      size: Number(tr.querySelector(".size").dataset.bytes),
      rate: tr.querySelector(".rate").textContent,
      percent: Number(tr.querySelector(".progress").dataset.percent),
      progressText: tr.querySelector(".progress").textContent,
    })),
  );

let browser = null;
try {
  // The listing has no scripts, styles or images of its own and the status
  // page none from elsewhere: anything fetched off the server is a bug.
  browser = await launch(origin, summary, { width: 1000, height: 300 });
  const { page } = browser;
  const resp = await page.goto(url, { waitUntil: "load" });
  if (!resp || resp.status() !== 200) throw new Error(`GET ${url}: status ${resp?.status()}`);
  summary.title = await page.title();
  await page.waitForFunction((n) => document.querySelectorAll("#rows tr").length === n, count);
  summary.first = await read(page);
  await page.screenshot({ path: shot1 });
  // Wait for the page to redraw every row with new values by itself.
  await page.waitForFunction(
    (before) => {
      const trs = [...document.querySelectorAll("#rows tr")];
      if (trs.length !== before.length) return false;
      return trs.every((tr) => {
        const file = tr.querySelector(".file").textContent;
        const old = before.find((r) => r.file === file);
        return old && Number(tr.querySelector(".sent").dataset.bytes) !== old.sent;
      });
    },
    summary.first,
    { timeout: 10_000 },
  );
  summary.second = await read(page);
  await page.screenshot({ path: shot2 });
} catch (e) {
  summary.error = String(e?.stack ?? e);
} finally {
  if (browser) await browser.close();
}
process.stdout.write(JSON.stringify(summary) + "\n");
process.exit(summary.error === null && summary.second !== null ? 0 : 1);
