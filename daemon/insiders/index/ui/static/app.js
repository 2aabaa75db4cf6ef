// insiders' only script: a live filter on project lists and copy buttons. Every page works
// without it (the filter is a GET form, the text to copy is selectable).
"use strict";

// PEP 503's rule, as the server's search applies it: mkdocs_material finds mkdocs-material.
const normal = (text) => text.toLowerCase().replace(/[-_.]+/g, "-");

function setUpFilter(input) {
  const list = document.querySelector("[data-filter-list]");
  if (!list) return;
  const items = Array.from(list.children);
  const empty = document.querySelector("[data-filter-empty]");
  const count = document.querySelector("[data-filter-count]");
  const apply = () => {
    const words = normal(input.value).split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const item of items) {
      const text = normal(item.dataset.search || "");
      const match = words.every((word) => text.includes(word));
      item.hidden = !match;
      if (match) shown += 1;
    }
    if (empty) empty.hidden = shown !== 0;
    if (count) count.textContent = `${shown} shown`;
  };
  input.addEventListener("input", apply);
}

// What a screen reader says after a click: the button's own label does not change.
function announce(text) {
  const status = document.querySelector("[data-announce]");
  if (!status) return;
  status.textContent = "";
  setTimeout(() => { status.textContent = text; }, 50);
}

function setUpCopy(button) {
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "Copied";
      announce("Copied");
    } catch {
      const code = button.previousElementSibling;
      window.getSelection().selectAllChildren(code);
      button.textContent = "Selected";
      announce("Selected: press Ctrl+C to copy");
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}

document.querySelectorAll("[data-filter-input]").forEach(setUpFilter);
document.querySelectorAll("[data-copy]").forEach(setUpCopy);
