"use strict";
// Polls /status.json once a second and redraws the table; text only goes in
// through textContent, so a file name cannot inject markup.
function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function draw(s) {
  document.getElementById("summary").textContent =
    s.transfers.length + " transfer(s), " + s.connections + " connection(s), backend " + s.backend +
    (s.rate_limit ? ", rate limit " + size(s.rate_limit) + "/s per connection" : "");
  const rows = document.getElementById("rows");
  rows.replaceChildren();
  for (const t of s.transfers) {
    const tr = document.createElement("tr");
    tr.dataset.id = t.id;
    cell(tr, t.client, "client");
    cell(tr, t.file, "file");
    cell(tr, size(t.sent), "num sent").dataset.bytes = t.sent;
    cell(tr, size(t.size), "num size").dataset.bytes = t.size;
    cell(tr, size(t.rate) + "/s", "num rate");
    const pct = t.size ? (100 * t.sent / t.size) : 100;
    const td = cell(tr, "", "progress");
    td.dataset.percent = pct.toFixed(1);
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = pct.toFixed(1) + "%";
    bar.appendChild(fill);
    td.appendChild(bar);
    td.appendChild(document.createTextNode(" " + pct.toFixed(1) + " %"));
    rows.appendChild(tr);
  }
}
async function poll() {
  try {
    const r = await fetch("status.json", { cache: "no-store" });
    draw(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot reach the server: " + e;
  }
  setTimeout(poll, 1000);
}
poll();
