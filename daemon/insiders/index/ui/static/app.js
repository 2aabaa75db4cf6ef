// insiders' only script: a live filter on project lists and copy buttons. Every page works
// without it (the filter is a GET form, the text to copy is selectable).
"use strict";

function setUpFilter(input) {
  const list = document.querySelector("[data-filter-list]");
  if (!list) return;
  const items = Array.from(list.children);
  const empty = document.querySelector("[data-filter-empty]");
  const count = document.querySelector("[data-filter-count]");
  const apply = () => {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const item of items) {
      const text = item.dataset.search || "";
      const match = words.every((word) => text.includes(word));
      item.hidden = !match;
      if (match) shown += 1;
    }
    if (empty) empty.hidden = shown !== 0;
    if (count) count.textContent = `${shown} shown`;
  };
  input.addEventListener("input", apply);
}

function setUpCopy(button) {
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "Copied";
    } catch {
      const code = button.previousElementSibling;
      window.getSelection().selectAllChildren(code);
      button.textContent = "Selected";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}

document.querySelectorAll("[data-filter-input]").forEach(setUpFilter);
document.querySelectorAll("[data-copy]").forEach(setUpCopy);
