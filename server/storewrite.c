/* The alert store's record write in C (falconet.server._storewrite): the records of one commit encoded,
 * checksummed and written with the GIL released once, for the whole commit.
 *
 * Why: the store's I/O thread shares the GIL with the writer thread, which converts the next alerts while a
 * commit runs (server/store.py). In Python the record's encoding (lengths table, CRC-32C wire by wire) held
 * the GIL for about 0.23 us per alert, and its `pwritev` calls (at most IOV_MAX parts each: three per
 * 2,048-alert record) each gave the GIL up and took it back; every take-back waits for the converting
 * writer to be made to drop it. Here only the gathering of the wire forms' pointers holds the GIL; the
 * lengths, the checksum and every `pwritev` run without it (bench/RESULTS.md, "storec, session 9").
 *
 * The bytes written are exactly server/store_data.py's `encode_record` (kinds FNc3 and FNd3: a CRC-32C), so
 * readers, recovery and old files are unchanged; tests/server/test_server_store_write.py compares them byte
 * for byte. The CRC uses the CPU's crc32 instruction; `hardware()` is False where there is none, and the
 * store then keeps its Python path (google-crc32c), since a table CRC here would cost more than it saves.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define HEAD_SIZE 24
#define BATCH_IOV 1024 /* IOV_MAX on Linux */

/* -- CRC-32C (Castagnoli, reflected; google-crc32c's value) ------------------------------------------------ */

static uint32_t crc_table[256];

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[i] = c;
    }
}

/* Continues a running (not yet inverted) CRC over `n` bytes, by table: the reference for the tests, and the
 * path where the CPU has no crc32 instruction. */
static uint32_t crc_soft(uint32_t crc, const unsigned char *p, size_t n) {
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}
static int have_hw(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}
#else
static uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t n) { return crc_soft(crc, p, n); }
static int have_hw(void) { return 0; }
#endif

static int hardware;
static uint32_t crc_run(uint32_t crc, const void *p, size_t n) {
    return hardware ? crc_hw(crc, (const unsigned char *)p, n) : crc_soft(crc, (const unsigned char *)p, n);
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* -- write_records ------------------------------------------------------------------------------------------ */

typedef struct {
    unsigned long long first;
    Py_ssize_t count; /* wires */
    Py_ssize_t part;  /* index of its first wire in the parts */
    unsigned char *headtable; /* head (24 bytes), then the lengths table */
    uint64_t size;            /* body: table and wires */
} record_t;

/* Writes every part at `offset`, however the kernel splits it (short writes, BATCH_IOV parts per call).
 * Returns 0 or an errno. Runs without the GIL. */
static int write_all(int fd, struct iovec *iov, Py_ssize_t n, off_t offset) {
    Py_ssize_t i = 0;
    while (i < n) {
        int batch = (int)(n - i < BATCH_IOV ? n - i : BATCH_IOV);
        size_t want = 0;
        for (int k = 0; k < batch; k++)
            want += iov[i + k].iov_len;
        ssize_t done = pwritev(fd, iov + i, batch, offset);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (done == 0 && want > 0)
            return ENOSPC; /* no progress: what a full disk looks like to a write that is not refused */
        offset += done;
        size_t left = (size_t)done;
        while (i < n && left >= iov[i].iov_len) {
            left -= iov[i].iov_len;
            i++;
        }
        if (left) { /* a short write inside a part: the rest of it next */
            iov[i].iov_base = (char *)iov[i].iov_base + left;
            iov[i].iov_len -= left;
        }
    }
    return 0;
}

PyDoc_STRVAR(write_records_doc,
"write_records(fd, offset, records, payload_crc) -> list[int]\n\n"
"Writes `records` (a list of (first sequence, list of wire forms as bytes)) at `offset` of `fd`, each as\n"
"store_data.encode_record encodes it (kind FNc3, or FNd3 when payload_crc is false), one after the other.\n"
"Returns each record's body size. Raises OSError (nothing says how much was written: the caller cuts the\n"
"file back). The GIL is released for the encoding, the checksums and the writes.");

static PyObject *write_records(PyObject *self, PyObject *args) {
    int fd, payload_crc;
    long long offset;
    PyObject *records;
    if (!PyArg_ParseTuple(args, "iLO!p", &fd, &offset, &PyList_Type, &records, &payload_crc))
        return NULL;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        return NULL;
    }
    Py_ssize_t nrec = PyList_GET_SIZE(records);
    Py_ssize_t nwires = 0;
    for (Py_ssize_t r = 0; r < nrec; r++) {
        PyObject *rec = PyList_GET_ITEM(records, r);
        if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != 2 || !PyList_Check(PyTuple_GET_ITEM(rec, 1))) {
            PyErr_SetString(PyExc_TypeError, "each record is (first, [wire bytes, ...])");
            return NULL;
        }
        nwires += PyList_GET_SIZE(PyTuple_GET_ITEM(rec, 1));
    }
    record_t *recs = PyMem_Calloc((size_t)(nrec ? nrec : 1), sizeof(record_t));
    struct iovec *iov = PyMem_Malloc(sizeof(struct iovec) * (size_t)(nwires + nrec + 1));
    PyObject **held = PyMem_Malloc(sizeof(PyObject *) * (size_t)(nwires + 1));
    PyObject *out = NULL;
    Py_ssize_t nheld = 0, nparts = 0;
    if (recs == NULL || iov == NULL || held == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* With the GIL: the wires' pointers, each wire held (its list may change once the GIL is released). */
    for (Py_ssize_t r = 0; r < nrec; r++) {
        PyObject *rec = PyList_GET_ITEM(records, r);
        PyObject *wires = PyTuple_GET_ITEM(rec, 1);
        Py_ssize_t n = PyList_GET_SIZE(wires);
        recs[r].first = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(rec, 0));
        if (recs[r].first == (unsigned long long)-1 && PyErr_Occurred())
            goto done;
        if (n > UINT32_MAX / 4 - 1) {
            PyErr_SetString(PyExc_ValueError, "too many alerts in one record");
            goto done;
        }
        recs[r].count = n;
        recs[r].headtable = PyMem_Malloc(HEAD_SIZE + 4 * (size_t)n);
        if (recs[r].headtable == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        iov[nparts].iov_base = recs[r].headtable;
        iov[nparts].iov_len = HEAD_SIZE + 4 * (size_t)n;
        nparts++;
        recs[r].part = nparts;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *w = PyList_GET_ITEM(wires, i);
            if (!PyBytes_Check(w)) {
                PyErr_SetString(PyExc_TypeError, "a wire form is not bytes");
                goto done;
            }
            Py_INCREF(w);
            held[nheld++] = w;
            iov[nparts].iov_base = PyBytes_AS_STRING(w);
            iov[nparts].iov_len = (size_t)PyBytes_GET_SIZE(w);
            nparts++;
        }
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < nrec && !err; r++) {
        record_t *rc = &recs[r];
        unsigned char *table = rc->headtable + HEAD_SIZE;
        uint64_t size = 4 * (uint64_t)rc->count;
        for (Py_ssize_t i = 0; i < rc->count; i++) {
            size_t len = iov[rc->part + i].iov_len;
            if (len > UINT32_MAX) {
                err = EFBIG;
                break;
            }
            put32(table + 4 * i, (uint32_t)len);
            size += len;
        }
        if (err || size > UINT32_MAX) {
            err = EFBIG;
            break;
        }
        rc->size = size;
        unsigned char numbers[16];
        put64(numbers, rc->first);
        put32(numbers + 8, (uint32_t)rc->count);
        put32(numbers + 12, (uint32_t)size);
        uint32_t crc = crc_run(0xFFFFFFFFu, numbers, 16);
        crc = crc_run(crc, table, 4 * (size_t)rc->count);
        if (payload_crc)
            for (Py_ssize_t i = 0; i < rc->count; i++)
                crc = crc_run(crc, iov[rc->part + i].iov_base, iov[rc->part + i].iov_len);
        memcpy(rc->headtable, payload_crc ? "FNc3" : "FNd3", 4);
        memcpy(rc->headtable + 4, numbers, 16);
        put32(rc->headtable + 20, ~crc);
    }
    if (!err)
        err = write_all(fd, iov, nparts, (off_t)offset);
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    out = PyList_New(nrec);
    if (out == NULL)
        goto done;
    for (Py_ssize_t r = 0; r < nrec; r++) {
        PyObject *v = PyLong_FromUnsignedLongLong(recs[r].size);
        if (v == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, r, v);
    }
done:
    for (Py_ssize_t i = 0; i < nheld; i++)
        Py_DECREF(held[i]);
    if (recs != NULL)
        for (Py_ssize_t r = 0; r < nrec; r++)
            PyMem_Free(recs[r].headtable);
    PyMem_Free(recs);
    PyMem_Free(iov);
    PyMem_Free(held);
    return out;
}

PyDoc_STRVAR(crc32c_doc, "crc32c(data, crc=0, software=False) -> int: CRC-32C of data continuing crc (tests).");

static PyObject *crc32c(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"data", "crc", "software", NULL};
    Py_buffer data;
    unsigned int crc = 0;
    int software = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|Ip", kw, &data, &crc, &software))
        return NULL;
    uint32_t c = ~(uint32_t)crc;
    c = software ? crc_soft(c, data.buf, (size_t)data.len) : crc_run(c, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(~c);
}

static PyObject *hardware_fn(PyObject *self, PyObject *unused) { return PyBool_FromLong(hardware); }

static PyMethodDef methods[] = {
    {"write_records", write_records, METH_VARARGS, write_records_doc},
    {"crc32c", (PyCFunction)(void (*)(void))crc32c, METH_VARARGS | METH_KEYWORDS, crc32c_doc},
    {"hardware", hardware_fn, METH_NOARGS, "Whether the CRC uses the CPU's crc32 instruction."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_storewrite", "The alert store's record write (server/storewrite.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__storewrite(void) {
    crc_table_init();
    hardware = have_hw();
    return PyModule_Create(&module);
}
