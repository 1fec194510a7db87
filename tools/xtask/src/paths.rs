//! Where things live: the workspace root, cargo's target dir and the build/ output dir.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Paths {
    /// The workspace root (the repository checkout).
    pub root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
    pub target: PathBuf,
    /// Project outputs that are not cargo's: the kernel image copy and testbed files.
    pub build: PathBuf,
}

impl Paths {
    pub fn discover() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest
            .join("../..")
            .canonicalize()
            .context("cannot locate the workspace root")?;
        // Every cargo child runs with `root` as its working directory, so a relative
        // CARGO_TARGET_DIR resolves against `root` for them and for us alike.
        let target = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join("target"),
        };
        let build = root.join("build");
        Ok(Self {
            root,
            target,
            build,
        })
    }

    /// Where `cargo build --profile kernel --target x86_64-unknown-none` leaves the kernel.
    pub fn built_kernel(&self) -> PathBuf {
        self.target
            .join("x86_64-unknown-none")
            .join("kernel")
            .join("xenrpc-kernel")
    }

    /// Where `cargo xtask build --services` writes the crates it generates (see `image`).
    pub fn service_images(&self) -> PathBuf {
        self.target.join("xenrpc-images")
    }

    /// Where cargo leaves the service VM image generated for the service crate `name`.
    pub fn built_service_image(&self, name: &str) -> PathBuf {
        self.target
            .join("x86_64-unknown-none")
            .join("kernel")
            .join(name)
    }

    /// The service VM image `cargo xtask build --services` writes for the crate `name`.
    pub fn service_image(&self, name: &str) -> PathBuf {
        self.build.join(format!("{name}.elf"))
    }

    /// The xl config of [`Self::service_image`].
    pub fn service_config(&self, name: &str) -> PathBuf {
        self.build.join(format!("{name}.cfg"))
    }

    /// The stable copy of the kernel image that the testbed and users boot.
    pub fn kernel_image(&self) -> PathBuf {
        self.build.join("xenrpc.elf")
    }

    /// The unprotected test image (handlers in kernel mode), bench-guest's baseline.
    pub fn unprotected_kernel_image(&self) -> PathBuf {
        self.build.join("xenrpc-unprotected.elf")
    }

    pub fn testbed_dir(&self) -> PathBuf {
        self.build.join("testbed")
    }

    pub fn scenarios_dir(&self) -> PathBuf {
        self.root.join("tests").join("testbed")
    }
}
