/* The memory fallback's noted GETs in C: MemoryCache._observe_py and _apply_pending_py
 * (otel_resilience/_memory_cache.py), the same steps in the same order.
 *
 * The Redis guard shows its memory cache every GET that worked. In Python, noting one and
 * later applying it runs about 130 bytecodes; here the note is one call of a GetNoter (no
 * Python frame) and the common application, the refresh of an entry that already holds
 * the value read, runs without one too. What is rare or long stays in Python and is called
 * back: a command other than a noted GET (_observe_general), a key Redis does not have
 * (_pop), a new or changed value (_put), and the lock with which _settle applies.
 *
 * Every Python-visible step keeps its order and its exact-type checks, and no C state
 * outlives a call: the deque, the clock, the cache's flags and the module's limits are read
 * from the objects each time, as the Python code reads them, so any number of threads can
 * note at once (the GIL orders them; appending to a deque is atomic) and a test that changes
 * _PENDING_GETS sees both twins follow it. The GIL is never released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <structmember.h>

/* Interned names, and the types whose methods cannot run Python code (so a shortcut that
 * skips a generic lookup changes nothing visible). Set once by the module's init. */
static PyObject *s_GET, *s_away, *s_pending, *s_clock, *s_settle, *s_observe_general;
static PyObject *s_append, *s_popleft, *s_data, *s_ttl, *s_pop, *s_put, *s_now, *s_get;
static PyObject *s_value, *s_redis_expires_at, *s_expires_at, *s_move_to_end;
static PyObject *s_PENDING_GETS, *s_PENDING_VALUE_BYTES, *s_args, *s_result;
static PyObject *kw_now; /* ("now",): the keyword names of _put(key, value, now=now) */
static PyObject *int_zero, *int_one;
static PyTypeObject *deque_type, *ordered_dict_type;
/* deque.append, deque.popleft and OrderedDict.move_to_end: builtin types cannot be changed,
 * so calling these on an exact deque or OrderedDict is what looking the method up gives. */
static PyObject *deque_append, *deque_popleft, *ordered_dict_move_to_end;

/* -- attributes kept in __slots__, read and written in place ------------------------------
 *
 * MemoryCache and _Item keep their attributes in __slots__: getattr finds a member
 * descriptor on the class and reads the object at a fixed offset in the instance. A Layout
 * remembers those offsets for one class and its version tag, which CPython changes whenever
 * the class or a base is modified; while the tag holds, reading or writing at the offset is
 * exactly what getattr and setattr do (an empty slot goes the generic way, to raise its
 * AttributeError). Any other class, or a modified one, goes the generic way. */

#define LAYOUT_SLOTS 3

typedef struct {
    PyTypeObject *type; /* a strong reference, or NULL: the generic way */
    unsigned int version;
    Py_ssize_t offset[LAYOUT_SLOTS];
} Layout;

static int version_valid(PyTypeObject *type) {
#if PY_VERSION_HEX < 0x030C0000
    if (!PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) {
        return 0;
    }
#endif
    return type->tp_version_tag != 0;
}

/* What generic getattr finds for name on type (its MRO's dicts, in order), borrowed, or
 * NULL (not there, or an error). */
static PyObject *class_attribute(PyTypeObject *type, PyObject *name) {
    PyObject *mro = type->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro)) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *base = PyTuple_GET_ITEM(mro, i);
        PyObject *dict = PyType_Check(base) ? ((PyTypeObject *)base)->tp_dict : NULL;
        if (dict == NULL) {
            return NULL;
        }
        PyObject *found = PyDict_GetItemWithError(dict, name);
        if (found != NULL || PyErr_Occurred()) {
            return found;
        }
    }
    return NULL;
}

/* Fill layout for type with the slots names[0..count), or leave layout->type NULL when
 * they are not all plain writable slots of a class with the generic getattr and setattr.
 * Never fails: an error met while looking is cleared, and the generic way will meet it. */
static void layout_learn(Layout *layout, PyTypeObject *type, PyObject *const *names,
                         int count) {
    Py_CLEAR(layout->type);
    if (type->tp_getattro != PyObject_GenericGetAttr ||
        type->tp_setattro != PyObject_GenericSetAttr || !version_valid(type)) {
        return;
    }
    for (int i = 0; i < count; i++) {
        PyObject *descriptor = class_attribute(type, names[i]);
        if (descriptor == NULL || !Py_IS_TYPE(descriptor, &PyMemberDescr_Type)) {
            PyErr_Clear();
            return;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY) != 0) {
            return;
        }
        layout->offset[i] = member->offset;
    }
    Py_INCREF(type);
    layout->type = type;
    layout->version = type->tp_version_tag;
}

static inline PyObject **layout_slot(const Layout *layout, PyObject *obj, int index) {
    PyTypeObject *type = layout->type;
    if (type == NULL || !Py_IS_TYPE(obj, type) || type->tp_version_tag != layout->version ||
        !version_valid(type)) {
        return NULL;
    }
    return (PyObject **)((char *)obj + layout->offset[index]);
}

/* getattr(obj, name), a new reference: in place when layout covers obj. */
static PyObject *slot_get(const Layout *layout, PyObject *obj, int index, PyObject *name) {
    PyObject **slot = layout_slot(layout, obj, index);
    if (slot != NULL && *slot != NULL) {
        Py_INCREF(*slot);
        return *slot;
    }
    return PyObject_GetAttr(obj, name);
}

/* setattr(obj, name, value): in place when layout covers obj (as member_set does it). */
static int slot_set(const Layout *layout, PyObject *obj, int index, PyObject *name,
                    PyObject *value) {
    PyObject **slot = layout_slot(layout, obj, index);
    if (slot == NULL) {
        return PyObject_SetAttr(obj, name, value);
    }
    PyObject *old = *slot;
    Py_INCREF(value);
    *slot = value;
    Py_XDECREF(old);
    return 0;
}

/* The slots of a MemoryCache that a note reads, and of an _Item that a refresh reads. */
enum { CACHE_AWAY, CACHE_PENDING, CACHE_CLOCK };
enum { ITEM_VALUE, ITEM_REDIS_EXPIRES_AT, ITEM_EXPIRES_AT };
static PyObject *cache_slot_names[LAYOUT_SLOTS], *item_slot_names[LAYOUT_SLOTS];

/* A global of _memory_cache as LOAD_GLOBAL finds it (builtins are not looked at: these
 * names are the module's own), a new reference, or NULL with NameError. */
static PyObject *module_global(PyObject *globals, PyObject *name) {
    PyObject *value = PyDict_GetItemWithError(globals, name);
    if (value == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_NameError, "name '%U' is not defined", name);
        }
        return NULL;
    }
    Py_INCREF(value);
    return value;
}

/* bool(left <op> right): 1, 0, or -1 with an exception. Not PyObject_RichCompareBool, which
 * says "equal" for one object on both sides without asking it, as "==" in Python does not. */
static int compare(PyObject *left, PyObject *right, int op) {
    PyObject *answer = PyObject_RichCompare(left, right, op);
    if (answer == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    return truth;
}

/* bool(size <op> limit) for a size that len() gave and a module constant. */
static int compare_size(Py_ssize_t size, PyObject *limit, int op) {
    if (PyLong_CheckExact(limit)) {
        int overflow = 0;
        long long bound = PyLong_AsLongLongAndOverflow(limit, &overflow);
        if (bound == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow != 0) { /* beyond any size: only its sign matters */
            return op == Py_LE ? overflow > 0 : overflow < 0;
        }
        return op == Py_LE ? (long long)size <= bound : (long long)size >= bound;
    }
    PyObject *boxed = PyLong_FromSsize_t(size);
    if (boxed == NULL) {
        return -1;
    }
    int truth = compare(boxed, limit, op);
    Py_DECREF(boxed);
    return truth;
}

/* sequence[index] as Python evaluates it (a new reference): tuples and lists directly,
 * anything else through __getitem__ with an int. */
static PyObject *item_at(PyObject *sequence, Py_ssize_t index, PyObject *boxed_index) {
    if (PyTuple_CheckExact(sequence) && index < PyTuple_GET_SIZE(sequence)) {
        PyObject *item = PyTuple_GET_ITEM(sequence, index);
        Py_INCREF(item);
        return item;
    }
    if (PyList_CheckExact(sequence) && index < PyList_GET_SIZE(sequence)) {
        PyObject *item = PyList_GET_ITEM(sequence, index);
        Py_INCREF(item);
        return item;
    }
    return PyObject_GetItem(sequence, boxed_index);
}

static PyObject *call_method0(PyObject *self, PyObject *name) {
    PyObject *stack[1] = {self};
    return PyObject_VectorcallMethod(name, stack, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static PyObject *call_method1(PyObject *self, PyObject *name, PyObject *arg) {
    PyObject *stack[2] = {self, arg};
    return PyObject_VectorcallMethod(name, stack, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* Whether observe notes this GET for later (1), takes the general path (0), or failed (-1):
 * the condition of MemoryCache._observe_py, evaluated in its order. */
static int notes(const Layout *layout, PyObject *cache, PyObject *globals, PyObject *args,
                 PyObject *result, PyObject **key_out) {
    Py_ssize_t length = PyObject_Size(args);
    if (length < 0) {
        return -1;
    }
    if (length != 2) {
        return 0;
    }
    PyObject *command = item_at(args, 0, int_zero);
    if (command == NULL) {
        return -1;
    }
    int is_get;
    if (PyUnicode_CheckExact(command)) {
        is_get = PyUnicode_Compare(command, s_GET) == 0;
    } else {
        is_get = compare(command, s_GET, Py_EQ);
    }
    Py_DECREF(command);
    if (is_get <= 0) {
        return is_get;
    }
    PyObject *away = slot_get(layout, cache, CACHE_AWAY, s_away);
    if (away == NULL) {
        return -1;
    }
    int is_away = PyObject_IsTrue(away);
    Py_DECREF(away);
    if (is_away != 0) {
        return is_away < 0 ? -1 : 0;
    }
    PyObject *key = item_at(args, 1, int_one);
    if (key == NULL) {
        return -1;
    }
    /* Exactly str or bytes, as type(x) is str: a subclass may hash, compare or encode
     * otherwise, and a memoryview may change before the note is applied. */
    if (!PyUnicode_CheckExact(key) && !PyBytes_CheckExact(key)) {
        Py_DECREF(key);
        return 0;
    }
    int short_answer;
    if (result == Py_None) {
        short_answer = 1;
    } else if (PyBytes_CheckExact(result) || PyUnicode_CheckExact(result)) {
        Py_ssize_t size = PyBytes_CheckExact(result) ? PyBytes_GET_SIZE(result)
                                                     : PyUnicode_GET_LENGTH(result);
        PyObject *limit = module_global(globals, s_PENDING_VALUE_BYTES);
        if (limit == NULL) {
            Py_DECREF(key);
            return -1;
        }
        short_answer = compare_size(size, limit, Py_LE);
        Py_DECREF(limit);
    } else {
        short_answer = 0;
    }
    if (short_answer != 1) {
        Py_DECREF(key);
        return short_answer;
    }
    *key_out = key;
    return 1;
}

/* MemoryCache._observe_py(args, result): a new reference to None, or NULL. */
static PyObject *observe(const Layout *layout, PyObject *cache, PyObject *globals,
                         PyObject *args, PyObject *result) {
    PyObject *key = NULL;
    int noted = notes(layout, cache, globals, args, result, &key);
    if (noted < 0) {
        return NULL;
    }
    if (noted == 0) {
        PyObject *stack[3] = {cache, args, result};
        PyObject *done = PyObject_VectorcallMethod(
            s_observe_general, stack, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (done == NULL) {
            return NULL;
        }
        Py_DECREF(done);
        Py_RETURN_NONE;
    }
    PyObject *pending = NULL, *append = NULL, *clock = NULL, *now = NULL, *note = NULL;
    PyObject *limit = NULL, *outcome = NULL;
    pending = slot_get(layout, cache, CACHE_PENDING, s_pending);
    if (pending == NULL) {
        goto fail;
    }
    /* pending.append is looked up before the clock is called, as in Python; for a deque
     * the lookup has no effect that could tell, and the call below skips the bound method. */
    if (!Py_IS_TYPE(pending, deque_type)) {
        append = PyObject_GetAttr(pending, s_append);
        if (append == NULL) {
            goto fail;
        }
    }
    clock = slot_get(layout, cache, CACHE_CLOCK, s_clock);
    if (clock == NULL) {
        goto fail;
    }
    now = PyObject_CallNoArgs(clock);
    if (now == NULL) {
        goto fail;
    }
    note = PyTuple_Pack(3, key, result, now);
    if (note == NULL) {
        goto fail;
    }
    if (append != NULL) {
        outcome = PyObject_CallOneArg(append, note);
    } else {
        PyObject *stack[2] = {pending, note};
        outcome = PyObject_Vectorcall(deque_append, stack, 2, NULL);
    }
    if (outcome == NULL) {
        goto fail;
    }
    Py_CLEAR(outcome);
    Py_ssize_t waiting = PyObject_Size(pending);
    if (waiting < 0) {
        goto fail;
    }
    limit = module_global(globals, s_PENDING_GETS);
    if (limit == NULL) {
        goto fail;
    }
    int full = compare_size(waiting, limit, Py_GE);
    if (full < 0) {
        goto fail;
    }
    if (full) {
        outcome = call_method0(cache, s_settle);
        if (outcome == NULL) {
            goto fail;
        }
        Py_CLEAR(outcome);
    }
    Py_DECREF(key);
    Py_DECREF(pending);
    Py_XDECREF(append);
    Py_DECREF(clock);
    Py_DECREF(now);
    Py_DECREF(note);
    Py_DECREF(limit);
    Py_RETURN_NONE;
fail:
    Py_DECREF(key);
    Py_XDECREF(pending);
    Py_XDECREF(append);
    Py_XDECREF(clock);
    Py_XDECREF(now);
    Py_XDECREF(note);
    Py_XDECREF(limit);
    return NULL;
}

/* -- GetNoter: MemoryCache.observe for one cache ------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *cache;
    PyObject *globals; /* the dict of otel_resilience._memory_cache */
    Layout layout;     /* the cache's slots _away, _pending and _clock */
    vectorcallfunc vectorcall;
} GetNoter;


static PyObject *noter_vectorcall(PyObject *self, PyObject *const *stack, size_t nargsf,
                                  PyObject *kwnames) {
    GetNoter *noter = (GetNoter *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == 2) {
        return observe(&noter->layout, noter->cache, noter->globals, stack[0], stack[1]);
    }
    /* Called as observe(args=..., result=...): bound the way Python binds the method. */
    PyObject *bound[2] = {NULL, NULL};
    PyObject *names[2] = {s_args, s_result};
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "observe() takes 2 positional arguments but %zd were given", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        bound[i] = stack[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int slot = -1;
        for (int i = 0; i < 2; i++) {
            int equal = PyUnicode_Compare(name, names[i]) == 0;
            if (equal) {
                slot = i;
                break;
            }
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (slot < 0) {
            PyErr_Format(PyExc_TypeError, "observe() got an unexpected keyword argument '%U'",
                         name);
            return NULL;
        }
        if (bound[slot] != NULL) {
            PyErr_Format(PyExc_TypeError, "observe() got multiple values for argument '%U'",
                         name);
            return NULL;
        }
        bound[slot] = stack[nargs + k];
    }
    for (int i = 0; i < 2; i++) {
        if (bound[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "observe() missing required argument: '%U'",
                         names[i]);
            return NULL;
        }
    }
    return observe(&noter->layout, noter->cache, noter->globals, bound[0], bound[1]);
}

static PyObject *noter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"cache", "globals", NULL};
    PyObject *cache, *globals;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!:GetNoter", keywords, &cache,
                                     &PyDict_Type, &globals)) {
        return NULL;
    }
    GetNoter *noter = (GetNoter *)type->tp_alloc(type, 0);
    if (noter == NULL) {
        return NULL;
    }
    Py_INCREF(cache);
    noter->cache = cache;
    Py_INCREF(globals);
    noter->globals = globals;
    noter->vectorcall = noter_vectorcall;
    layout_learn(&noter->layout, Py_TYPE(cache), cache_slot_names, LAYOUT_SLOTS);
    return (PyObject *)noter;
}

static int noter_traverse(PyObject *self, visitproc visit, void *arg) {
    GetNoter *noter = (GetNoter *)self;
    Py_VISIT(noter->cache);
    Py_VISIT(noter->globals);
    Py_VISIT(noter->layout.type);
    return 0;
}

static int noter_clear(PyObject *self) {
    GetNoter *noter = (GetNoter *)self;
    Py_CLEAR(noter->cache);
    Py_CLEAR(noter->globals);
    Py_CLEAR(noter->layout.type);
    return 0;
}

static void noter_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    noter_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *noter_repr(PyObject *self) {
    GetNoter *noter = (GetNoter *)self;
    if (noter->cache == NULL) {
        return PyUnicode_FromString("<GetNoter of nothing>");
    }
    return PyUnicode_FromFormat("<GetNoter of %R>", noter->cache);
}

static PyObject *noter_get_cache(PyObject *self, void *closure) {
    (void)closure;
    GetNoter *noter = (GetNoter *)self;
    PyObject *cache = noter->cache != NULL ? noter->cache : Py_None;
    Py_INCREF(cache);
    return cache;
}

static PyGetSetDef noter_getset[] = {
    {"cache", noter_get_cache, NULL, "The MemoryCache whose GETs this notes.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject GetNoterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_resilience._cmemory.GetNoter",
    .tp_basicsize = sizeof(GetNoter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "GetNoter(cache, globals): cache.observe in C (MemoryCache._observe_py).\n\n"
              "globals is the dict of otel_resilience._memory_cache, where each call reads\n"
              "_PENDING_GETS and _PENDING_VALUE_BYTES as the Python code does.",
    .tp_new = noter_new,
    .tp_dealloc = noter_dealloc,
    .tp_traverse = noter_traverse,
    .tp_clear = noter_clear,
    .tp_repr = noter_repr,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(GetNoter, vectorcall),
    .tp_getset = noter_getset,
};

/* -- apply_pending: MemoryCache._apply_pending_py ----------------------------------------- */

/* key, result, now = note: borrowed references into *holder (a tuple, new reference). */
static int unpack_note(PyObject *note, PyObject **holder, PyObject **key, PyObject **result,
                       PyObject **now) {
    PyObject *tuple;
    if (PyTuple_CheckExact(note)) {
        Py_INCREF(note);
        tuple = note;
    } else {
        tuple = PySequence_Tuple(note);
        if (tuple == NULL) {
            return -1;
        }
    }
    Py_ssize_t size = PyTuple_GET_SIZE(tuple);
    if (size != 3) {
        if (size < 3) {
            PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 3, got %zd)",
                         size);
        } else {
            PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 3)");
        }
        Py_DECREF(tuple);
        return -1;
    }
    *holder = tuple;
    *key = PyTuple_GET_ITEM(tuple, 0);
    *result = PyTuple_GET_ITEM(tuple, 1);
    *now = PyTuple_GET_ITEM(tuple, 2);
    return 0;
}

/* The general path's refresh, in place: young again and the most recently used, a known
 * Redis expiry keeping its deadline. 0, or -1 with an exception. */
static int refresh(const Layout *layout, PyObject *data, PyObject *key, PyObject *item,
                   PyObject *now, PyObject *ttl, PyObject *unknown) {
    PyObject *expiry = slot_get(layout, item, ITEM_REDIS_EXPIRES_AT, s_redis_expires_at);
    if (expiry == NULL) {
        return -1;
    }
    if (expiry != Py_None && expiry != unknown) {
        int past = compare(expiry, now, Py_LT);
        if (past < 0 ||
            (past && slot_set(layout, item, ITEM_REDIS_EXPIRES_AT, s_redis_expires_at, now) < 0)) {
            Py_DECREF(expiry);
            return -1;
        }
    }
    Py_DECREF(expiry);
    PyObject *expires_at;
    if (PyFloat_CheckExact(now) && PyFloat_CheckExact(ttl)) {
        expires_at = PyFloat_FromDouble(PyFloat_AS_DOUBLE(now) + PyFloat_AS_DOUBLE(ttl));
    } else {
        expires_at = PyNumber_Add(now, ttl);
    }
    if (expires_at == NULL) {
        return -1;
    }
    int failed = slot_set(layout, item, ITEM_EXPIRES_AT, s_expires_at, expires_at);
    Py_DECREF(expires_at);
    if (failed < 0) {
        return -1;
    }
    PyObject *moved;
    if (Py_IS_TYPE(data, ordered_dict_type)) {
        PyObject *stack[2] = {data, key};
        moved = PyObject_Vectorcall(ordered_dict_move_to_end, stack, 2, NULL);
    } else {
        moved = call_method1(data, s_move_to_end, key);
    }
    if (moved == NULL) {
        return -1;
    }
    Py_DECREF(moved);
    return 0;
}

/* One note applied, as of its own time. 0, or -1 with an exception. */
static int apply_note(Layout *layout, PyObject *cache, PyObject *data, PyObject *ttl,
                      PyObject *unknown, PyObject *note) {
    PyObject *holder, *noted_key, *result, *now;
    if (unpack_note(note, &holder, &noted_key, &result, &now) < 0) {
        return -1;
    }
    PyObject *key = NULL, *value = NULL, *item = NULL, *outcome = NULL;
    int status = -1;
    /* str.encode(): UTF-8, strict, so a lone surrogate raises UnicodeEncodeError here too. */
    if (PyUnicode_CheckExact(noted_key)) {
        key = PyUnicode_AsUTF8String(noted_key);
        if (key == NULL) {
            goto done;
        }
    } else {
        Py_INCREF(noted_key);
        key = noted_key;
    }
    if (result == Py_None) {
        outcome = call_method1(cache, s_pop, key);
        if (outcome == NULL) {
            goto done;
        }
        status = 0;
        goto done;
    }
    if (PyUnicode_CheckExact(result)) {
        value = PyUnicode_AsUTF8String(result);
        if (value == NULL) {
            goto done;
        }
    } else {
        Py_INCREF(result);
        value = result;
    }
    /* data.get(key): for an OrderedDict that is dict.get, which runs no Python code but the
     * key's hash and equality, as the dict lookup does. */
    if (Py_IS_TYPE(data, ordered_dict_type)) {
        item = PyDict_GetItemWithError(data, key);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            item = Py_None;
        }
        Py_INCREF(item);
    } else {
        item = call_method1(data, s_get, key);
        if (item == NULL) {
            goto done;
        }
    }
    int same = 0;
    if (item != Py_None) {
        /* A hash's value is a dict, never equal to bytes: it is replaced, as a GET of the
         * key shows it now holds a string. */
        if (!Py_IS_TYPE(item, layout->type)) {
            layout_learn(layout, Py_TYPE(item), item_slot_names, LAYOUT_SLOTS);
        }
        PyObject *kept = slot_get(layout, item, ITEM_VALUE, s_value);
        if (kept == NULL) {
            goto done;
        }
        same = compare(kept, value, Py_EQ);
        Py_DECREF(kept);
        if (same < 0) {
            goto done;
        }
    }
    if (same) {
        status = refresh(layout, data, key, item, now, ttl, unknown);
        goto done;
    }
    PyObject *stack[4] = {cache, key, value, now};
    outcome = PyObject_VectorcallMethod(s_put, stack, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, kw_now);
    if (outcome == NULL) {
        goto done;
    }
    status = 0;
done:
    Py_DECREF(holder);
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_XDECREF(item);
    Py_XDECREF(outcome);
    return status;
}

PyDoc_STRVAR(apply_pending_doc,
             "apply_pending(cache, unknown, /)\n--\n\n"
             "MemoryCache._apply_pending_py in C: apply the noted GETs, oldest first, each as "
             "of\nthe time it was noted (the caller holds the cache's lock). unknown is "
             "_UNKNOWN.");

static PyObject *apply_pending(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "apply_pending expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *cache = args[0], *unknown = args[1];
    PyObject *pending = NULL, *data = NULL, *ttl = NULL;
    Layout layout = {NULL, 0, {0}}; /* of the items met, learnt from the first */
    pending = PyObject_GetAttr(cache, s_pending);
    if (pending == NULL) {
        goto fail;
    }
    data = PyObject_GetAttr(cache, s_data);
    if (data == NULL) {
        goto fail;
    }
    ttl = PyObject_GetAttr(cache, s_ttl);
    if (ttl == NULL) {
        goto fail;
    }
    /* Only the lock's holder takes from the deque: the GETs counted now are all there, and
     * one noted meanwhile by another thread waits for the next caller. On an exception the
     * note being applied is gone (as in Python) and the rest stay in the deque. */
    Py_ssize_t count = PyObject_Size(pending);
    if (count < 0) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *note;
        if (Py_IS_TYPE(pending, deque_type)) {
            note = PyObject_Vectorcall(deque_popleft, &pending, 1, NULL);
        } else {
            note = call_method0(pending, s_popleft);
        }
        if (note == NULL) {
            goto fail;
        }
        int failed = apply_note(&layout, cache, data, ttl, unknown, note);
        Py_DECREF(note);
        if (failed < 0) {
            goto fail;
        }
    }
    Py_DECREF(pending);
    Py_DECREF(data);
    Py_DECREF(ttl);
    Py_XDECREF(layout.type);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(pending);
    Py_XDECREF(data);
    Py_XDECREF(ttl);
    Py_XDECREF(layout.type);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"apply_pending", (PyCFunction)(void (*)(void))apply_pending, METH_FASTCALL,
     apply_pending_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "otel_resilience._cmemory",
    "The memory fallback's noted GETs (MemoryCache.observe and _apply_pending) in C.",
    -1,
    module_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

static int intern(PyObject **slot, const char *text) {
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

static PyTypeObject *type_from(PyObject *collections, const char *name) {
    PyObject *type = PyObject_GetAttrString(collections, name);
    if (type != NULL && !PyType_Check(type)) {
        PyErr_Format(PyExc_TypeError, "collections.%s is not a type", name);
        Py_CLEAR(type);
    }
    return (PyTypeObject *)type;
}

PyMODINIT_FUNC PyInit__cmemory(void) {
    if (intern(&s_GET, "GET") < 0 || intern(&s_away, "_away") < 0 ||
        intern(&s_pending, "_pending") < 0 || intern(&s_clock, "_clock") < 0 ||
        intern(&s_settle, "_settle") < 0 || intern(&s_observe_general, "_observe_general") < 0 ||
        intern(&s_append, "append") < 0 || intern(&s_popleft, "popleft") < 0 ||
        intern(&s_data, "_data") < 0 || intern(&s_ttl, "default_ttl_seconds") < 0 ||
        intern(&s_pop, "_pop") < 0 || intern(&s_put, "_put") < 0 || intern(&s_now, "now") < 0 ||
        intern(&s_get, "get") < 0 || intern(&s_value, "value") < 0 ||
        intern(&s_redis_expires_at, "redis_expires_at") < 0 ||
        intern(&s_expires_at, "expires_at") < 0 || intern(&s_move_to_end, "move_to_end") < 0 ||
        intern(&s_PENDING_GETS, "_PENDING_GETS") < 0 ||
        intern(&s_PENDING_VALUE_BYTES, "_PENDING_VALUE_BYTES") < 0 ||
        intern(&s_args, "args") < 0 || intern(&s_result, "result") < 0) {
        return NULL;
    }
    kw_now = PyTuple_Pack(1, s_now);
    int_zero = PyLong_FromLong(0);
    int_one = PyLong_FromLong(1);
    if (kw_now == NULL || int_zero == NULL || int_one == NULL) {
        return NULL;
    }
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL) {
        return NULL;
    }
    deque_type = type_from(collections, "deque");
    ordered_dict_type = type_from(collections, "OrderedDict");
    Py_DECREF(collections);
    if (deque_type == NULL || ordered_dict_type == NULL) {
        return NULL;
    }
    deque_append = PyObject_GetAttr((PyObject *)deque_type, s_append);
    deque_popleft = PyObject_GetAttr((PyObject *)deque_type, s_popleft);
    ordered_dict_move_to_end = PyObject_GetAttr((PyObject *)ordered_dict_type, s_move_to_end);
    if (deque_append == NULL || deque_popleft == NULL || ordered_dict_move_to_end == NULL) {
        return NULL;
    }
    cache_slot_names[CACHE_AWAY] = s_away;
    cache_slot_names[CACHE_PENDING] = s_pending;
    cache_slot_names[CACHE_CLOCK] = s_clock;
    item_slot_names[ITEM_VALUE] = s_value;
    item_slot_names[ITEM_REDIS_EXPIRES_AT] = s_redis_expires_at;
    item_slot_names[ITEM_EXPIRES_AT] = s_expires_at;
    if (PyType_Ready(&GetNoterType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&GetNoterType);
    if (PyModule_AddObject(m, "GetNoter", (PyObject *)&GetNoterType) < 0) {
        Py_DECREF(&GetNoterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
