// loops-bridge admin: the little JavaScript the pages need. Served by the bridge; no inline scripts.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(button.dataset.copy));
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// The endpoint form. The page holds each provider's event-type rows, the chosen one's shown
// and sent; choosing another provider swaps them in place (without a script, the provider's
// own "Show its event types" button loads the form for it). Typing a Loops event for a type
// ticks it: an event for a type the endpoint does not accept would be refused.
function showProvider(select) {
  for (const rows of document.querySelectorAll("fieldset[data-provider]")) {
    const chosen = rows.dataset.provider === select.value;
    rows.hidden = !chosen;
    rows.disabled = !chosen;
  }
  document.getElementById(select.dataset.shows).value = select.value;
}

document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-shows]")) showProvider(event.target);
});

document.addEventListener("input", (event) => {
  const box = event.target.dataset.ticks && document.getElementById(event.target.dataset.ticks);
  if (box && event.target.value.trim()) box.checked = true;
});

for (const select of document.querySelectorAll("select[data-shows]")) showProvider(select);

// Tables on a phone: each row becomes a block of labelled lines (admin.css). A cell's label
// is its column's header, copied here, so that no template writes each label twice.
for (const table of document.querySelectorAll("table")) {
  const headers = [...(table.tHead?.rows[0]?.cells ?? [])].map((th) => th.textContent.trim());
  if (!headers.length) continue;
  for (const row of [...table.tBodies].flatMap((body) => [...body.rows])) {
    let column = 0;
    for (const cell of row.cells) {
      if (cell.colSpan === 1 && headers[column]) cell.dataset.label = headers[column];
      column += cell.colSpan;
    }
  }
  table.dataset.stacks = "";
}
for (const element of document.querySelectorAll("[data-hidden-with-script]")) element.hidden = true;

// A page answering a POST that shows something once (an endpoint's new secret): its address
// becomes the endpoint's, so that reloading it shows the endpoint, not a second POST.
const pageUrl = document.querySelector("[data-page-url]");
if (pageUrl) history.replaceState(null, "", pageUrl.dataset.pageUrl);

// A page that follows something under way (a queued delivery, an import) reloads itself
// every few seconds, unless the person is using it: a field focused or changed, a section
// opened or closed, text selected. It reloads once they are done (the field put back, the
// section as it was, nothing selected): the page as it came cannot hold their work.
const follows = document.querySelector("[data-refresh]");
if (follows) {
  const sections = new Map([...document.querySelectorAll("details")].map((d) => [d, d.open]));
  const changed = (field) =>
    field.matches("select")
      ? [...field.options].some((option) => option.selected !== option.defaultSelected)
      : field.matches("[type=checkbox], [type=radio]")
        ? field.checked !== field.defaultChecked
        : field.type !== "hidden" && field.value !== field.defaultValue;
  const busy = () =>
    document.activeElement?.matches("input, textarea, select") ||
    [...document.querySelectorAll("input, textarea, select")].some(changed) ||
    [...sections].some(([section, open]) => section.open !== open) ||
    String(window.getSelection()).trim() !== "";
  setInterval(() => {
    if (!busy()) location.replace(follows.dataset.refreshUrl);
  }, Number(follows.dataset.refresh) * 1000);
}

// A form sent back with mistakes: the first field to fix has the focus, so the keyboard and
// a screen reader start there (the summary above it is read out as an alert).
document.querySelector('[aria-invalid="true"]:not([hidden] *)')?.focus();
