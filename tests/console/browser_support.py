"""Debian's headless Chromium, driven by its chromium-driver through Selenium (`make browser-system`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from resources import missing, require_root
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

T = TypeVar("T")


def start_chromium(env: dict[str, str] | None = None) -> WebDriver:
    """A headless Chromium (missing locally: skip; with CI=true: fail)."""
    if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
        missing("Debian's chromium and chromium-driver are not installed (make browser-system)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--enable-precise-memory-info", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, env=env))


def wait(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 10.0, what: str = "") -> T:
    """WebDriverWait: polls `condition` until it returns a true value, or fails after `timeout` seconds."""
    result: T = WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition, what)
    return result


def js(driver: WebDriver, script: str) -> Any:
    return driver.execute_script(script)


POLICY_DIR = Path("/etc/chromium/policies/managed")


class CertificateBrowser:
    """Chromium presenting a client certificate: its own NSS database (a HOME of its own, filled with NSS's
    certutil and pk12util) trusting the test CA and holding NAME's certificate and key, and a managed policy
    (AutoSelectCertificateForUrls, for https://127.0.0.1 and certificates of that CA only) so the browser
    presents it without asking. The policy file is Chromium's only way to that and lives under /etc: root,
    and removed when the browser quits."""

    def __init__(self, certs: Path, name: str, home: Path) -> None:
        require_root("a managed Chromium policy (/etc/chromium/policies)")
        for tool in ("certutil", "pk12util"):
            if shutil.which(tool) is None:
                missing(f"NSS's {tool} is not installed (libnss3-tools; make browser-system)")
        db = home / ".pki" / "nssdb"
        db.mkdir(parents=True)
        p12 = home / f"{name}.p12"
        key = serialization.load_pem_private_key((certs / f"{name}.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((certs / f"{name}.crt").read_bytes())
        ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        p12.write_bytes(pkcs12.serialize_key_and_certificates(name.encode(), key, cert, None,
                                                              serialization.NoEncryption()))  # fmt: skip
        nss = f"sql:{db}"
        for cmd in (["certutil", "-N", "-d", nss, "--empty-password"],
                    ["certutil", "-A", "-d", nss, "-n", "falconet-test-ca", "-t", "C,,", "-i", str(certs / "ca.crt")],
                    ["pk12util", "-d", nss, "-i", str(p12), "-W", ""]):  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        issuer = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        rule = {"pattern": "https://127.0.0.1:*", "filter": {"ISSUER": {"CN": issuer}}}
        POLICY_DIR.mkdir(parents=True, exist_ok=True)
        self.policy = POLICY_DIR / f"falconet-tests-{os.getpid()}.json"
        self.policy.write_text(json.dumps({"AutoSelectCertificateForUrls": [json.dumps(rule)]}))
        try:
            self.driver = start_chromium(env=dict(os.environ, HOME=str(home)))
        except BaseException:
            self.policy.unlink(missing_ok=True)
            raise

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            self.policy.unlink(missing_ok=True)
