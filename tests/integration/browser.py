"""Headless Chromium for the integration suite: Debian's ``chromium`` driven by its ``chromedriver``
through Selenium, offline (no Selenium Manager, nothing downloaded at run time).

A browser failure must read like a bug report: :func:`wait_css` says which element it waited for and
what the page showed instead, and :func:`evidence` saves a screenshot and the page's HTML next to the
test's temporary files and names them in the failure.
"""

from __future__ import annotations

import base64
import colorsys
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from tests.integration.airflow_cluster import HarnessError

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
#: The width the dashboard was reviewed at (issue 12): its tables must fit without scrolling sideways.
WINDOW = (1400, 1000)
WAIT_SECONDS = 30.0


def chromium(log_dir: Path) -> webdriver.Chrome:
    """A fresh headless Chromium (its own profile: no cookies) at :data:`WINDOW`, logging to ``log_dir``."""
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not binary.is_file():
            raise HarnessError(
                f"{binary} not found: install Debian's `{package}` package "
                "(`apt-get install -y chromium chromium-driver`; scripts/test does it)"
            )
    # Selenium Manager would look for (and download) a driver and a browser; both are given here.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",  # a container's /dev/shm is often 64 MB
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_dir / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        raise HarnessError(f"chromium did not start: {exc.msg}; see {log_dir / 'chromedriver.log'}") from exc
    driver.set_page_load_timeout(WAIT_SECONDS)
    return driver


def describe(driver: webdriver.Chrome) -> str:
    """Where the browser is and what it shows: the start of a failure message."""
    try:
        text = driver.execute_script("return document.body ? document.body.innerText : ''") or ""
    except WebDriverException as exc:
        text = f"<no text: {exc.msg}>"
    text = re.sub(r"\s+", " ", text).strip()
    return f"at {driver.current_url} (title {driver.title!r}), the page reads: {text[:600]!r}"


def wait_css(driver: Any, css: str, what: str, timeout: float = WAIT_SECONDS) -> WebElement:
    """The first element matching ``css`` once present; else an AssertionError naming ``what``."""
    try:
        found: WebElement = WebDriverWait(driver, timeout).until(
            lambda d: d.find_elements("css selector", css)
        )[0]
        return found
    except TimeoutException:
        raise AssertionError(
            f"{what} ({css!r}) did not appear within {timeout:.0f}s; {describe(driver)}"
        ) from None


def wait_url(driver: webdriver.Chrome, prefix: str, what: str, timeout: float = WAIT_SECONDS) -> str:
    """The browser's URL once it starts with ``prefix``."""
    try:
        return str(
            WebDriverWait(driver, timeout).until(
                lambda d: d.current_url if d.current_url.startswith(prefix) else None
            )
        )
    except TimeoutException:
        raise AssertionError(f"{what}: expected a URL starting {prefix!r}; {describe(driver)}") from None


@contextlib.contextmanager
def evidence(driver: webdriver.Chrome, folder: Path, name: str) -> Iterator[None]:
    """On any failure inside, save ``name``.png and ``name``.html in ``folder`` and name them in it."""
    try:
        yield
    except BaseException as exc:
        folder.mkdir(parents=True, exist_ok=True)
        shot, source = folder / f"{name}.png", folder / f"{name}.html"
        try:
            driver.save_screenshot(str(shot))
            source.write_text(driver.page_source)
            exc.add_note(f"failure screenshot: {shot}\npage source: {source}")
        except WebDriverException as err:
            exc.add_note(f"no failure screenshot: {err.msg}")
        raise


def full_page_png(driver: webdriver.Chrome, path: Path) -> Path:
    """The whole page at the window's width (not only the viewport) as a PNG at ``path``."""
    width, height = driver.execute_script(
        "const e = document.scrollingElement; return [e.scrollWidth, e.scrollHeight];"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


_SHOWN_COLOURS = """
const context = document.createElement('canvas').getContext('2d', {willReadFrequently: true});
function srgb(css) {  // any CSS colour (oklch, hsl, ...) as the sRGB pixel it paints
    context.clearRect(0, 0, 1, 1);
    context.fillStyle = 'rgba(0, 0, 0, 0)';
    context.fillStyle = css;
    context.fillRect(0, 0, 1, 1);
    const [r, g, b, a] = context.getImageData(0, 0, 1, 1).data;
    return [r, g, b, a / 255];
}
const element = arguments[0];
let background = [0, 0, 0, 0];
for (let e = element; e; e = e.parentElement) {
    background = srgb(getComputedStyle(e).backgroundColor);
    if (background[3] > 0) break;
}
const text = srgb(getComputedStyle(element).color);
const css = ([r, g, b, a]) => `rgba(${r}, ${g}, ${b}, ${a})`;
return {background: css(background), color: css(text)};
"""


def shown_colours(driver: Any, element: WebElement) -> dict[str, str]:
    """The element's text colour and the background it shows (its own, else the nearest painted
    ancestor's), as ``rgba()`` in sRGB whatever the stylesheet wrote (``oklch()``, variables, ...)."""
    colours: dict[str, str] = driver.execute_script(_SHOWN_COLOURS, element)
    return colours


_RGB = re.compile(
    r"rgba?\(\s*(\d+(?:\.\d+)?)[,\s]+(\d+(?:\.\d+)?)[,\s]+(\d+(?:\.\d+)?)(?:\s*[,/]\s*([\d.]+%?))?\s*\)"
)


def rgba(css_colour: str) -> tuple[float, float, float, float]:
    """``rgb(...)``/``rgba(...)`` as computed by the browser: channels 0..255 and alpha 0..1."""
    match = _RGB.fullmatch(css_colour.strip())
    if not match:
        raise AssertionError(f"not a computed rgb() colour: {css_colour!r}")
    red, green, blue, alpha = match.groups()
    opacity = 1.0 if alpha is None else float(alpha.rstrip("%")) / (100 if alpha.endswith("%") else 1)
    return float(red), float(green), float(blue), opacity


def is_red(css_colour: str) -> bool:
    """An opaque-enough colour whose hue is red (within 25° of 0°) and clearly saturated: the alert
    colour in light (pale red) and dark (deep red) themes, but not the warning yellow or a grey."""
    red, green, blue, alpha = rgba(css_colour)
    if alpha < 0.2:
        return False
    hue, lightness, saturation = colorsys.rgb_to_hls(red / 255, green / 255, blue / 255)
    return saturation >= 0.35 and (hue * 360 <= 25 or hue * 360 >= 335) and 0.1 < lightness < 0.97


def luminance(css_colour: str) -> float:
    """Relative luminance (WCAG) of an opaque colour: 0 black .. 1 white."""
    red, green, blue, _ = rgba(css_colour)

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
