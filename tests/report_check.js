// Injected into a copy of a Snakemake report by tests/test_report_browser.py and run by headless Chromium.
// It goes through the report as a reader does, clicking the menu, each category, each subcategory and the
// view button of every result, and writes what it saw as JSON into a hidden pre element (id
// latentrec-report-check):
// per category whether its menu entry was found, per result the image the report showed (its pixel size;
// 0 = broken) or the bytes behind a download link. With "#show=<category>" in the URL it ends on that
// category's last figure instead (the screenshot).
(async function () {
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const seen = { menu: [], categories: {}, results: {}, errors: [] };
    window.addEventListener("error", (e) => seen.errors.push(String(e.message)));
    const pathOf = new Map(Object.entries(results).map(([path, r]) => [r.data_uri, path]));

    // The innermost element of the app whose whole text is `text`, clicked as a user would.
    function click(text) {
        const hits = [...document.querySelectorAll("#app *")].filter((el) => el.textContent.trim() === text);
        if (!hits.length) return false;
        hits[hits.length - 1].click();
        return true;
    }

    // The result image the content pane shows (not the logo), or undefined.
    const resultImage = () => [...document.querySelectorAll("#app img")].find((i) => pathOf.has(i.getAttribute("src")));

    // The result image shown once the pane has switched away from `previous` and finished loading.
    async function imageShown(previous) {
        for (let i = 0; i < 50; i++) {
            await sleep(100);
            const img = resultImage();
            if (img && img.getAttribute("src") !== previous && img.complete) return img;
        }
        return null;
    }

    async function visitRows(category, subcategory) {
        const rows = [...document.querySelectorAll("#app table tbody tr")];
        for (const row of rows) {
            const link = row.querySelector("a[iconname='eye']");
            const label = row.innerText.replace(/\s+/g, " ").trim();
            if (!link) {
                seen.errors.push(`${category}/${subcategory}: row without a view button: ${label}`);
                continue;
            }
            if (link.getAttribute("href") === "#") {
                const before = resultImage();
                link.click();
                const img = await imageShown(before ? before.getAttribute("src") : null);
                const path = img ? pathOf.get(img.getAttribute("src")) : undefined;
                seen.results[path || `?${label}`] = {
                    category, subcategory, label, kind: "image",
                    width: img ? img.naturalWidth : 0, height: img ? img.naturalHeight : 0,
                };
            } else {
                const href = link.getAttribute("href");
                const text = await (await fetch(href)).text();
                seen.results[pathOf.get(href) || `?${label}`] = {
                    category, subcategory, label, kind: "download", bytes: text.length,
                    table_rows: text.split("\n").filter((l) => l.startsWith("|")).length,
                };
            }
        }
    }

    try {
        await walk();
    } catch (err) {
        seen.errors.push(`report_check.js: ${err && err.stack ? err.stack : err}`);
    }
    const out = document.createElement("pre");
    out.id = "latentrec-report-check";
    out.style.display = "none";
    out.textContent = JSON.stringify(seen);
    document.body.appendChild(out);

    async function walk() {
    await sleep(300);
    seen.menu = [...document.querySelectorAll("#app ul li")].map((li) => li.innerText.trim()).filter(Boolean);
    const show = decodeURIComponent((location.hash.match(/show=([^&]*)/) || [])[1] || "");
    for (const category of Object.keys(categories).sort()) {
        app.setView({ navbarMode: "menu" });
        await sleep(100);
        const clicked = click(category);
        await sleep(200);
        seen.categories[category] = { clicked, subcategories: Object.keys(categories[category]) };
        for (const subcategory of Object.keys(categories[category])) {
            app.setView({ navbarMode: "subcategory", category, subcategory });
            await sleep(200);
            await visitRows(category, subcategory);
        }
        if (category === show) break;  // the screenshot: this category's list and its last figure
    }
    }
})();
