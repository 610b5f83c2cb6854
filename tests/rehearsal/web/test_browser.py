"""The browser fixtures themselves: Debian's Chromium draws WebGL2 through SwiftShader and loads ES modules."""

from __future__ import annotations


def test_webgl2_draws_pixels_headless(harness):
    """A WebGL2 clear colour reads back from the canvas: software rendering works without a GPU."""
    pixel = harness.evaluate(
        """() => {
            const canvas = document.createElement('canvas');
            canvas.width = 16; canvas.height = 16;
            document.body.appendChild(canvas);
            const gl = canvas.getContext('webgl2', {preserveDrawingBuffer: true});
            if (!gl) return null;
            gl.clearColor(1.0, 0.5, 0.0, 1.0);
            gl.clear(gl.COLOR_BUFFER_BIT);
            const out = new Uint8Array(4);
            gl.readPixels(8, 8, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, out);
            return Array.from(out);
        }"""
    )
    assert pixel is not None, "no WebGL2 context in headless Chromium"
    assert pixel[0] == 255 and abs(pixel[1] - 128) <= 1 and pixel[2] == 0 and pixel[3] == 255


def test_static_server_serves_modules_over_http(harness, static_server):
    """The harness is served over http from loopback (ES modules refuse file://); unknown paths are 404."""
    assert harness.url.startswith("http://127.0.0.1:")
    status = harness.evaluate("async () => (await fetch('/nope')).status")
    assert status == 404
