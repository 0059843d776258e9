//! Builds the bundled libopus with the `cc` crate: a C compiler is all it needs (no CMake).
//!
//! The file lists come from libopus's own `*_sources.mk`, as its CMake and Meson builds take
//! them, so an upgrade of the sources under `opus/` brings its lists along. The configuration is
//! the one opusic-sys's CMake build produced (floating point, `-O3`, hardening on, x86 SIMD
//! chosen at run time): the same library, bit for bit, as before.

use std::collections::HashMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const OPUS_DIR: &str = "opus";

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let opus = root.join(OPUS_DIR);
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={OPUS_DIR}");
    println!("cargo:rerun-if-changed=build.rs");

    let lists = source_lists(&opus);
    let list = |name: &str| -> Vec<PathBuf> {
        lists
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from libopus's *_sources.mk"))
            .iter()
            .map(|file| opus.join(file))
            .collect()
    };

    // libopus includes "config.h" when HAVE_CONFIG_H is set; everything else goes by -D, as in
    // its CMake build, which writes only the version there.
    let version = fs::read_to_string(opus.join("package_version"))
        .ok()
        .and_then(|s| s.split('"').nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    fs::write(out.join("config.h"), format!("#define PACKAGE_VERSION \"{version}\"\n"))
        .expect("write config.h");

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let has = |f: &str| features.split(',').any(|x| x == f);
    let msvc = target_env == "msvc";
    let x86 = (arch == "x86_64" || arch == "x86") && !msvc;

    let mut base = cc::Build::new();
    base.include(&out)
        .include(opus.join("include"))
        .include(&opus)
        .include(opus.join("celt"))
        .include(opus.join("silk"))
        .include(opus.join("silk/float"))
        .define("OPUS_BUILD", None)
        .define("HAVE_CONFIG_H", None)
        .define("HAVE_LRINT", None)
        .define("HAVE_LRINTF", None)
        .define("ENABLE_HARDENING", None)
        .define("DISABLE_DEBUG_FLOAT", None)
        .define("NDEBUG", None)
        // The same optimisation in every profile, as the CMake build did: a debug build of the
        // server still mixes in real time.
        .opt_level(3)
        .debug(false)
        .warnings(false);
    if msvc {
        base.define("USE_ALLOCA", None);
    } else {
        base.define("VAR_ARRAYS", None)
            .define("HAVE_ALLOCA_H", None)
            .flag_if_supported("-std=gnu99")
            .flag_if_supported("-fstack-protector-strong")
            .define("_FORTIFY_SOURCE", "2");
    }

    let mut sources = Vec::new();
    for name in
        ["CELT_SOURCES", "SILK_SOURCES", "SILK_SOURCES_FLOAT", "OPUS_SOURCES", "OPUS_SOURCES_FLOAT"]
    {
        sources.extend(list(name));
    }

    // x86: every SIMD kernel is built, each file with its own instruction set, and the library
    // picks by CPUID at run time (OPUS_HAVE_RTCD); what the target guarantees is presumed.
    let mut simd: Vec<(&[&str], Vec<PathBuf>)> = Vec::new();
    if x86 {
        let presume_sse = has("sse");
        let presume_sse2 = has("sse2");
        let presume_sse41 = has("sse4.1");
        let presume_avx2 = has("avx2") && has("fma");
        for (define, on) in [
            ("OPUS_X86_MAY_HAVE_SSE", true),
            ("OPUS_X86_MAY_HAVE_SSE2", true),
            ("OPUS_X86_MAY_HAVE_SSE4_1", true),
            ("OPUS_X86_MAY_HAVE_AVX2", true),
            ("OPUS_X86_PRESUME_SSE", presume_sse),
            ("OPUS_X86_PRESUME_SSE2", presume_sse2),
            ("OPUS_X86_PRESUME_SSE4_1", presume_sse41),
            ("OPUS_X86_PRESUME_AVX2", presume_avx2),
        ] {
            if on {
                base.define(define, None);
            }
        }
        if presume_sse {
            base.flag("-msse");
        }
        if presume_sse2 {
            base.flag("-msse2");
        }
        if !(presume_sse && presume_sse2 && presume_sse41 && presume_avx2) {
            base.define("OPUS_HAVE_RTCD", None).define("CPU_INFO_BY_ASM", None);
            sources.extend(list("CELT_SOURCES_X86_RTCD"));
            sources.extend(list("SILK_SOURCES_X86_RTCD"));
        }
        simd.push((&["-msse"], list("CELT_SOURCES_SSE")));
        simd.push((&["-msse2"], list("CELT_SOURCES_SSE2")));
        let mut sse41 = list("CELT_SOURCES_SSE4_1");
        sse41.extend(list("SILK_SOURCES_SSE4_1"));
        simd.push((&["-msse4.1"], sse41));
        let mut avx2 = list("CELT_SOURCES_AVX2");
        avx2.extend(list("SILK_SOURCES_AVX2"));
        avx2.extend(list("SILK_SOURCES_FLOAT_AVX2"));
        simd.push((&["-mavx", "-mfma", "-mavx2"], avx2));
    }

    // One archive: the common files, then each SIMD group with its flags on top of the same
    // configuration.
    let mut objects = base.clone().files(&sources).compile_intermediates();
    for (flags, files) in simd {
        let mut build = base.clone();
        for flag in flags {
            build.flag(flag);
        }
        objects.extend(build.files(&files).compile_intermediates());
    }
    let mut lib = base;
    lib.objects(&objects).compile("opus");
}

/// Every `NAME = a.c b.c ...` list of libopus's `*_sources.mk` files.
fn source_lists(opus: &Path) -> HashMap<String, Vec<String>> {
    let mut lists = HashMap::new();
    for mk in ["celt_sources.mk", "silk_sources.mk", "opus_sources.mk"] {
        let text = fs::read_to_string(opus.join(mk)).unwrap_or_else(|e| panic!("read {mk}: {e}"));
        let joined = text.replace("\\\n", " ");
        for line in joined.lines() {
            if let Some((name, files)) = line.split_once('=') {
                let files = files.split_whitespace().map(str::to_owned).collect();
                lists.insert(name.trim().to_owned(), files);
            }
        }
    }
    lists
}
