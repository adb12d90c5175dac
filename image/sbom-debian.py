#!/usr/bin/env python3
"""CycloneDX SBOM (JSON, spec 1.5) of the Debian packages installed in a root file system:
    image/sbom-debian.py ROOTFS OUT.cdx.json [--name NAME] [--version VERSION]
It reads ROOTFS/var/lib/dpkg with the host's dpkg-query (image/build keeps that database in the
staged root). Each installed package is a component with its version, architecture, source
package and purl pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-N; licenses come from
machine-readable (DEP-5) copyright files, as Debian names them. Python standard library only.
SOURCE_DATE_EPOCH, when set, is the timestamp; the serial number follows from the content."""
import argparse
import datetime
import json
import os
import subprocess
import sys
import urllib.parse
import uuid

FIELDS = ["Package", "Version", "Architecture", "db:Status-Status", "Source", "Maintainer",
          "Homepage", "binary:Summary"]
DEP5 = "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0"


def os_release(root):
    info = {}
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            with open(os.path.join(root, rel)) as f:
                for line in f:
                    key, sep, value = line.strip().partition("=")
                    if sep:
                        info[key] = value.strip('"')
            return info
        except OSError:
            continue
    return info


def packages(root):
    admindir = os.path.join(root, "var/lib/dpkg")
    if not os.path.isfile(os.path.join(admindir, "status")):
        sys.exit("sbom-debian: no dpkg database at %s" % admindir)
    fmt = "\\t".join("${%s}" % f for f in FIELDS) + "\\n"
    out = subprocess.run(["dpkg-query", "--admindir=" + admindir, "-W", "-f=" + fmt],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        row = dict(zip(FIELDS, line.split("\t")))
        if row.get("db:Status-Status") == "installed":
            yield row


def licenses(root, package):
    """The License: names of a DEP-5 copyright file, in order, without repeats."""
    names = []
    try:
        with open(os.path.join(root, "usr/share/doc", package, "copyright"),
                  errors="replace") as f:
            text = f.read()
    except OSError:
        return names
    if not text.startswith("Format:") or DEP5 not in text.splitlines()[0]:
        return names
    for line in text.splitlines():
        if line.startswith("License:"):
            name = line[len("License:"):].strip()
            if name and name not in names:
                names.append(name)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rootfs")
    ap.add_argument("out")
    ap.add_argument("--name", default="watchgrid-image")
    ap.add_argument("--version", default="")
    args = ap.parse_args()

    rel = os_release(args.rootfs)
    distro = "%s-%s" % (rel.get("ID", "debian"), rel.get("VERSION_ID", "")) \
        if rel.get("VERSION_ID") else rel.get("ID", "debian")
    components = []
    for p in sorted(packages(args.rootfs), key=lambda p: (p["Package"], p["Architecture"])):
        name, version, arch = p["Package"], p["Version"], p["Architecture"]
        purl = "pkg:deb/debian/%s@%s?arch=%s&distro=%s" % (
            urllib.parse.quote(name, safe=""), urllib.parse.quote(version, safe=":~"),
            urllib.parse.quote(arch, safe=""), urllib.parse.quote(distro, safe=""))
        c = {"type": "library", "bom-ref": purl, "name": name, "version": version,
             "purl": purl}
        if p.get("binary:Summary"):
            c["description"] = p["binary:Summary"]
        if p.get("Maintainer"):
            c["publisher"] = p["Maintainer"]
        lic = licenses(args.rootfs, name)
        if lic:
            c["licenses"] = [{"license": {"name": n}} for n in lic]
        if p.get("Homepage"):
            c["externalReferences"] = [{"type": "website", "url": p["Homepage"]}]
        props = [{"name": "debian:architecture", "value": arch}]
        if p.get("Source"):
            props.append({"name": "debian:source", "value": p["Source"]})
        c["properties"] = props
        components.append(c)
    if not components:
        sys.exit("sbom-debian: no installed packages in %s" % args.rootfs)

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch \
        else datetime.datetime.now(datetime.timezone.utc)
    described = {"type": "operating-system", "bom-ref": "image:" + args.name,
                 "name": args.name}
    if args.version:
        described["version"] = args.version
    if rel.get("PRETTY_NAME"):
        described["description"] = "Debian packages of the root file system (%s)" % rel["PRETTY_NAME"]
    serial = uuid.uuid5(uuid.NAMESPACE_URL, "watchgrid-sbom-debian:%s:%s:%s" % (
        args.name, args.version, ",".join(c["purl"] for c in components)))
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:%s" % serial,
        "version": 1,
        "metadata": {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "image/sbom-debian.py",
                                      "description": "dpkg-query of the root file system"}]},
            "component": described,
            "properties": [{"name": "debian:distro", "value": distro}],
        },
        "components": components,
        "dependencies": [{"ref": described["bom-ref"],
                          "dependsOn": [c["bom-ref"] for c in components]}],
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(bom, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out)
    print("Debian SBOM: %s (%d packages, %s)" % (args.out, len(components), distro))


if __name__ == "__main__":
    main()
