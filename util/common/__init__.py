"""What every stage shares; imports no other ``util`` package.

    errors       DataError: the one error type for unusable input
    oid_files    Google's file names, CSV columns, mask folders; iter_rows: the strict ground-truth CSV reader
    atomic       AtomicWriter: temporary name, renamed into place only when complete
    cli          run(main): one-line errors and exit codes for every entry point; shared flags
    textio       opening text inputs strictly: UTF-8 (BOM accepted), gzip and binary refused by name
    hierarchy    the class hierarchy: leaves, parents, ancestors, class subsets, the shipped class files
    mask_codec   the challenge's EncodedMask <-> COCO RLE <-> binary mask, with one strict decoder
    rle_runs     compressed RLE counts read at compiled speed (numba): run totals (the strict decoder's
                 check), foreground runs with areas and boxes in the same pass, intersections, windows
    submission   the Kaggle submission CSV: streaming reader, lock-step reader, atomic writer, id lists
    image_io     image sizes from headers, full decodes for --strict, mask PNGs, image file lookup
    drawing      instances drawn on images (annotation and prediction pictures)
    workers      pool workers that die with their parent (no orphans after a SIGKILL)
"""
